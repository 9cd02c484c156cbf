"""Image input/output: anything a user hands us -> uint8 gray / RGB arrays, with one-line errors;
the competition csv; PNG bytes."""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


class ImageError(ValueError):
    """An input that cannot be used; the message is one line naming the file and the problem."""


def _describe(img) -> str:
    if isinstance(img, (str, os.PathLike)):
        return str(img)
    if isinstance(img, Image.Image):
        return f"<PIL {img.mode} {img.size[0]}x{img.size[1]}>"
    if isinstance(img, np.ndarray):
        return f"<array {img.dtype} {img.shape}>"
    return f"<{type(img).__name__}>"


def open_image(img) -> Image.Image:
    """A path, PIL image or array -> a loaded PIL image, EXIF orientation applied for files."""
    if isinstance(img, (str, os.PathLike)):
        path = Path(img)
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        return _open(path, str(path))
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, np.ndarray):
        a = img
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or a.size == 0:
            raise ImageError(f"{_describe(img)}: expected an (H,W), (H,W,3) or (H,W,4) array")
        if a.dtype == np.uint16:
            a = (a >> 8).astype(np.uint8)
        elif a.dtype == bool:
            a = a.astype(np.uint8) * 255
        elif np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.rint(a * 255 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8)
        elif a.dtype != np.uint8:
            a = np.clip(a, 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(a))
    raise ImageError(f"{_describe(img)}: expected a path, a PIL image or a numpy array")


def open_bytes(data: bytes, name: str = "upload") -> Image.Image:
    """An uploaded file's bytes -> a loaded PIL image (as ``open_image`` does for a path)."""
    import io
    return _open(io.BytesIO(data), name)


def _open(fp, name: str) -> Image.Image:
    """Open and decode a file (path or file object), EXIF orientation applied; Pillow's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) enforced; one-line errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                im.load()
                return ImageOps.exif_transpose(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: image too large ({e}); allow it with --max-pixels N "
                         "(CLI) or PIL.Image.MAX_IMAGE_PIXELS = N (Python)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: unreadable or truncated image ({e})") from None


def _flatten_alpha(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im


def to_gray(img) -> np.ndarray:
    """Any supported input -> (H,W) uint8 gray (PIL's ``convert("L")`` for 8-bit colour)."""
    im = open_image(img)
    try:
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            a = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
            if im.mode == "F" and a.max() <= 1.0:
                hi = 1.0
            return np.clip(np.rint(a / hi * 255), 0, 255).astype(np.uint8)
        im = _flatten_alpha(im)
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise ImageError(f"{_describe(img)}: cannot convert {im.mode} image to gray ({e})") from None


def colour_of(img) -> np.ndarray | None:
    """(H,W,3) uint8 RGB of an image with colour channels (RGB, palette, CMYK ...); None for a gray one."""
    im = open_image(img)
    return None if im.mode in ("1", "L", "LA", "La", "I", "F") or im.mode.startswith("I;") else to_rgb(im)


def read_input(img, mask=None, mask_name: str = "mask") -> tuple:
    """What a restore reads of one input: ``(gray (H,W) uint8, mask (H,W) bool or None, its colour
    (H,W,3) uint8 or None for a gray input)``; ``mask``: a path, PIL image or array, or None.
    Whether the colour is kept is decided once the preset is known (``policy.decide_colour``)."""
    im = open_image(img)
    gray = to_gray(im)
    colour = colour_of(im)
    return gray, to_mask(mask, gray.shape, name=mask_name) if mask is not None else None, colour


def to_rgb(img) -> np.ndarray:
    """Any supported input -> (H,W,3) uint8 RGB."""
    im = open_image(img)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return np.repeat(to_gray(im)[..., None], 3, -1)
    return np.asarray(_flatten_alpha(im).convert("RGB"), dtype=np.uint8).copy()


def to_mask(mask, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A mask (path, PIL or array; nonzero = damaged) -> (H,W) bool of the expected shape."""
    m = to_gray(mask) if not isinstance(mask, np.ndarray) or mask.ndim == 3 else np.asarray(mask)
    if m.shape != tuple(shape):
        raise ImageError(f"{_describe(mask) if name == 'mask' else name}: mask is "
                         f"{m.shape[1]}x{m.shape[0]}, the image is {shape[1]}x{shape[0]}")
    return m > 0


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursive, sorted)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_pairs_csv(path) -> list[tuple[Path, Path | None]]:
    """Rows of a competition csv as (input path, gt path or None), paths resolved against the
    csv's folder. Raises FileNotFoundError / ValueError with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such csv")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "input_image_path" not in reader.fieldnames:
            raise ValueError(f"{path}: expected a column 'input_image_path' (competition layout)")
        for r in reader:
            gt = r.get("gt_image_path")
            rows.append((path.parent / r["input_image_path"], path.parent / gt if gt else None))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def png_bytes(img: Image.Image, compress_level: int = 1) -> bytes:
    """A PIL image as PNG bytes, zlib level 1. 8-bit gray and RGB(A) go through OpenCV with the
    'up' row filter: a 512x512 photo encodes in ~7 ms (Pillow's adaptive filters: ~13 ms at level
    1, ~60 ms at its default 6) and comes out ~10 % larger (PNG is lossless either way)."""
    up = getattr(cv2, "IMWRITE_PNG_FILTER", None)
    if img.mode in ("L", "RGB", "RGBA") and up is not None:
        a = np.asarray(img)
        if a.ndim == 3:
            a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
        ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, compress_level, up, cv2.IMWRITE_PNG_FILTER_UP])
        if ok:
            return buf.tobytes()
    import io as _io
    buf = _io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def save_png(img: Image.Image, path: str | os.PathLike, compress_level: int = 1) -> None:
    """Save a PIL image as PNG (``png_bytes``) atomically (temp file + rename)."""
    from stages.checkpoint import atomic_write_bytes
    atomic_write_bytes(path, png_bytes(img, compress_level))
