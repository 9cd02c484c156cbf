"""Reference photos: other pictures of the same scene, indexed once, matched to each restored
image, and used only when verified.

    python -m pipeline.references build DIR... --out refs.idx     # index folders of colour photos
    python -m pipeline.restore IN --references refs.idx|DIR ...    # a folder is indexed on the fly, cached

Matching never invents a match:

1. **Retrieval**: ORB features of the gray outside the damage; each descriptor's bytes vote, through
   ``TABLES`` hash tables of 16-bit keys, for the references holding the same bytes; the most
   voted ``CANDIDATES`` go on.
2. **Registration**: ratio-tested Hamming matches and a RANSAC similarity (translation, scale,
   rotation); a near-identity transform is snapped to whole pixels and refined (±2 px), so a crop
   of the same photo lines up exactly.
3. **Verification**: over the pixels both cover, outside the damage, the reference's gray is
   tone-matched (least squares ``a·ref + b``) to the input's; it must cover ``MIN_OVERLAP`` of the
   image and correlate at ``MIN_CORR`` or more. Anything less: no reference, and the restore is
   bit-identical to one without references.

The index is an ``.npz`` (no pickles): file paths, sizes, feature scales, keypoints and
descriptors (~20 KB per photo). References are read from their files when they match.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import io
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.processors import Reference
from stages.registry import atomic_write_bytes

from .color import pil_gray
from .io import ImageError, list_images, to_rgb

log = logging.getLogger("pipeline.references")
FORMAT = "restore-references/1"
FEATURE_SIDE = 640     # images are shrunk to this longer side for their features
FEATURES = 300         # ORB keypoints per image (~12 KB in the index)
TABLES = 8             # hash tables: bytes 2t, 2t+1 of each 32-byte descriptor
CANDIDATES = 5         # references registered per query
MIN_INLIERS = 12       # RANSAC inliers a registration needs
MIN_OVERLAP = 0.10     # share of the image a verified reference must cover (outside the damage)
MIN_CORR = 0.95        # correlation of the tone-matched grays a verified reference must reach
MIN_SIDE = 32          # smaller files are no reference


def features(gray: np.ndarray, ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(H,W) uint8 gray (+ (H,W) bool pixels to ignore) -> keypoints (n,2) float32 and ORB
    descriptors (n,32) uint8 at the feature scale, and that scale (feature px per image px)."""
    scale = min(1.0, FEATURE_SIDE / max(gray.shape))
    g = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    keep = None
    if ignore is not None and ignore.any():
        m = cv2.resize(ignore.astype(np.uint8), g.shape[::-1], interpolation=cv2.INTER_NEAREST) if scale < 1 else ignore
        keep = (cv2.dilate(m.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0).astype(np.uint8) * 255
    orb = cv2.ORB_create(nfeatures=FEATURES, fastThreshold=10)
    kp, desc = orb.detectAndCompute(np.ascontiguousarray(g), keep)
    if desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), scale
    return np.float32([k.pt for k in kp]), desc, scale


def _index_one(path: str):
    """A file -> (path, (H,W), scale, keypoints, descriptors), or (path, error line)."""
    try:
        rgb = to_rgb(path)
    except ImageError as e:
        return path, str(e)
    if min(rgb.shape[:2]) < MIN_SIDE:
        return path, f"{path}: {rgb.shape[1]}x{rgb.shape[0]} is too small to be a reference (min side {MIN_SIDE})"
    if np.ptp(rgb.astype(np.int16), -1).max() <= 2:
        return path, f"{path}: a gray image has no colour to give; skipped"
    kp, desc, scale = features(pil_gray(rgb))
    return path, rgb.shape[:2], scale, kp, desc


@dataclass
class Library:
    """An index of reference photos: ``match(gray, mask)`` -> a verified ``Reference`` or None."""
    paths: list
    sizes: np.ndarray      # (N,2) int32 H, W
    scales: np.ndarray     # (N,) float32 feature scale
    offsets: np.ndarray    # (N+1,) int64: photo i's features are rows offsets[i]:offsets[i+1]
    keypoints: np.ndarray  # (M,2) float32
    descriptors: np.ndarray  # (M,32) uint8

    @functools.cached_property
    def _tables(self) -> list:
        """Per table: the owner of each descriptor sorted by its 16-bit key, and where each key's
        run starts (built on first use: an index only being written needs none)."""
        owner = np.repeat(np.arange(len(self.paths), dtype=np.int32), np.diff(self.offsets))
        tables = []
        for t in range(TABLES):
            key = self.descriptors[:, 2 * t:2 * t + 2].copy().view(">u2")[:, 0]  # 2 bytes -> uint16
            order = np.argsort(key, kind="stable")  # a radix sort for 16-bit keys
            tables.append((owner[order], np.concatenate([[0], np.cumsum(np.bincount(key, minlength=65536))])))
        return tables

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def concat(cls, libraries: list) -> "Library":
        """One library holding the photos of all ``libraries``."""
        offs = [lib.offsets[1:] + base for lib, base in
                zip(libraries, np.cumsum([0] + [len(lib.descriptors) for lib in libraries[:-1]]))]
        return cls(paths=[p for lib in libraries for p in lib.paths],
                   sizes=np.concatenate([lib.sizes for lib in libraries]),
                   scales=np.concatenate([lib.scales for lib in libraries]),
                   offsets=np.concatenate([[0], *offs]).astype(np.int64),
                   keypoints=np.concatenate([lib.keypoints for lib in libraries]),
                   descriptors=np.concatenate([lib.descriptors for lib in libraries]))

    # ---------------------------------------------------------------- build, save, load
    @classmethod
    def build(cls, roots: list, workers: int = 1, progress: bool = False) -> "Library":
        """Index every image under ``roots`` (files or folders); each unusable file is named in
        one line on stderr and left out."""
        files = []
        for r in roots:
            p = Path(r)
            if p.is_dir():
                files += list_images(p)
            elif p.is_file():
                files.append(p)
            else:
                print(f"error: {p}: no such file or folder", file=sys.stderr)
        files = [str(f.resolve()) for f in files]
        rows = []
        # threads: decoding (Pillow) and ORB (OpenCV) release the GIL, and no process is forked
        ex = ThreadPoolExecutor(workers) if workers > 1 else None
        with ex or contextlib.nullcontext():
            results = ex.map(_index_one, files) if ex else map(_index_one, files)
            for i, res in enumerate(results):
                if len(res) == 2:
                    print(f"error: {res[1]}", file=sys.stderr)
                else:
                    rows.append(res)
                if progress and (i + 1) % 1000 == 0:
                    print(f"indexed {i + 1}/{len(files)}", file=sys.stderr, flush=True)
        counts = [len(r[4]) for r in rows]
        return cls(paths=[r[0] for r in rows], sizes=np.int32([r[1] for r in rows]).reshape(-1, 2),
                   scales=np.float32([r[2] for r in rows]),
                   offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   keypoints=np.concatenate([r[3] for r in rows] or [np.zeros((0, 2), np.float32)]),
                   descriptors=np.concatenate([r[4] for r in rows] or [np.zeros((0, 32), np.uint8)]))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index (an ``.npz``, atomically)."""
        buf = io.BytesIO()
        np.savez(buf, format=np.array(FORMAT), paths=np.array(self.paths, dtype=str), sizes=self.sizes,
                 scales=self.scales, offsets=self.offsets, keypoints=self.keypoints, descriptors=self.descriptors)
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Library":
        """Read an index written by ``save``; a missing or foreign file is one ``ImageError`` line."""
        try:
            z = np.load(path, allow_pickle=False)
            if str(z["format"]) != FORMAT:
                raise ValueError(f"format {str(z['format'])!r}")
            return cls(paths=[str(p) for p in z["paths"]], sizes=z["sizes"], scales=z["scales"],
                       offsets=z["offsets"], keypoints=z["keypoints"], descriptors=z["descriptors"])
        except FileNotFoundError:
            raise ImageError(f"{path}: no such reference index") from None
        except (OSError, ValueError, KeyError) as e:
            raise ImageError(f"{path}: not a reference index ({e})") from None

    # ---------------------------------------------------------------- matching
    def candidates(self, desc: np.ndarray, k: int = CANDIDATES, skip=frozenset()) -> list[int]:
        """The ``k`` references whose descriptors share the most hash keys with ``desc`` (photos
        whose index is in ``skip`` left out)."""
        if not len(self) or not len(desc):
            return []
        votes = np.zeros(len(self), np.int64)
        for t, (owners, starts) in enumerate(self._tables):
            key = desc[:, 2 * t:2 * t + 2].copy().view(">u2")[:, 0].astype(np.int64)
            lo, n = starts[key], starts[key + 1] - starts[key]
            idx = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())
            votes += np.bincount(owners[idx], minlength=len(self))
        votes[list(skip)] = 0
        best = np.argsort(votes)[::-1][:k]
        return [int(i) for i in best if votes[i] > 0]

    def match(self, gray: np.ndarray, mask: np.ndarray | None = None, skip=frozenset()) -> Reference | None:
        """(H,W) uint8 gray (+ (H,W) bool damage) -> the best verified, aligned ``Reference``, or
        None (``skip``: indices of photos to leave out)."""
        mask = np.zeros(gray.shape, bool) if mask is None else mask
        kp, desc, scale = features(gray, mask)
        best = None
        for i in self.candidates(desc, skip=skip):
            m = _register(kp, desc, scale, self._slice(i), float(self.scales[i]))
            if m is None:
                continue
            try:
                rgb = to_rgb(self.paths[i])
            except ImageError as e:
                log.warning("reference skipped: %s", e)
                continue
            found = verify(gray, mask, rgb, m)
            if found is not None and (best is None or found[1] > best[1]):
                best = (dataclasses.replace(found[0], source=str(self.paths[i])), found[1])
                if found[1] > 0.995:  # the same photo, covering it all: nothing can be better
                    break
        return None if best is None else best[0]

    def _slice(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.keypoints[a:b], self.descriptors[a:b]


def _register(kp, desc, scale, ref, ref_scale) -> np.ndarray | None:
    """A (2,3) similarity from reference pixels to input pixels, or None."""
    rkp, rdesc = ref
    if len(desc) < MIN_INLIERS or len(rdesc) < MIN_INLIERS:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc, rdesc, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < MIN_INLIERS:
        return None
    src = rkp[[g.trainIdx for g in good]] / ref_scale
    dst = kp[[g.queryIdx for g in good]] / scale
    m, inliers = cv2.estimateAffinePartial2D(src, dst, ransacReprojThreshold=3.0 / scale)
    if m is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    return m


def _warp(rgb: np.ndarray, m: np.ndarray, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The reference in the input's frame and where it covers it: a whole-pixel shift is a copy."""
    h, w = shape
    if np.allclose(m[:, :2], np.eye(2), atol=1e-6):
        dx, dy = int(m[0, 2]), int(m[1, 2])
        out, valid = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), bool)
        ys, xs = slice(max(0, dy), min(h, dy + rgb.shape[0])), slice(max(0, dx), min(w, dx + rgb.shape[1]))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[ys, xs] = rgb[ys.start - dy:ys.stop - dy, xs.start - dx:xs.stop - dx]
            valid[ys, xs] = True
        return out, valid
    out = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cover = cv2.warpAffine(np.ones(rgb.shape[:2], np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    return out, cv2.erode(cover, np.ones((3, 3), np.uint8)).astype(bool)


def _snap(gray: np.ndarray, known: np.ndarray, rgb: np.ndarray, m: np.ndarray, step: int = 3) -> np.ndarray:
    """A near-identity transform as the whole-pixel shift (±2 px around it) whose gray agrees best
    (compared on every ``step``-th row and column of the pixels both cover)."""
    if not np.allclose(m[:, :2], np.eye(2), atol=0.01):
        return m
    ref = pil_gray(rgb).astype(np.int16)
    q, k = gray.astype(np.int16), known
    h, w = gray.shape
    best, err = m, np.inf
    for dy in range(int(round(m[1, 2])) - 2, int(round(m[1, 2])) + 3):
        for dx in range(int(round(m[0, 2])) - 2, int(round(m[0, 2])) + 3):
            y0, y1, x0, x1 = max(0, dy), min(h, dy + ref.shape[0]), max(0, dx), min(w, dx + ref.shape[1])
            if (y1 - y0) * (x1 - x0) < 0.05 * gray.size:
                continue
            sel = k[y0:y1:step, x0:x1:step]
            d = np.abs(ref[y0 - dy:y1 - dy:step, x0 - dx:x1 - dx:step] - q[y0:y1:step, x0:x1:step])[sel]
            if d.size and d.mean() < err:
                best, err = np.float64([[1, 0, dx], [0, 1, dy]]), d.mean()
    return best


def verify(gray: np.ndarray, mask: np.ndarray, rgb: np.ndarray, m: np.ndarray) -> tuple | None:
    """``(Reference, correlation)`` when the reference, put in place by ``m``, agrees with the
    input's gray outside the damage; else None."""
    known = ~cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    m = _snap(gray, known, rgb, m)
    warped, valid = _warp(rgb, m, gray.shape)
    sel = valid & known
    if sel.sum() < max(MIN_OVERLAP * gray.size, 64):
        return None
    ref_gray = pil_gray(warped)
    r, q = ref_gray[sel].astype(np.float64), gray[sel].astype(np.float64)
    if r.std() < 2 or q.std() < 2:  # flat: nothing to verify against
        return None
    dr, dq = r - r.mean(), q - q.mean()
    corr = float((dr * dq).mean() / (dr.std() * dq.std()))
    if not corr >= MIN_CORR:
        return None
    a = float((dr * dq).mean() / dr.var())  # least squares q ~ a * r + b
    b = q.mean() - a * r.mean()
    exact = np.abs(r - q).max() <= 1
    tone = ref_gray if exact else np.clip(np.rint(a * ref_gray + b), 0, 255).astype(np.uint8)
    return Reference(gray=tone, rgb=warped, valid=valid), corr * valid.mean()


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, size: int, mtime: int) -> Library:  # an index read once per process and version
    return Library.load(path)


def open_library(source) -> Library | None:
    """A ``Library``, an index file, or a folder of photos (indexed once and cached by its
    files' names, sizes and times; the folder itself is never written to). None -> None."""
    if source is None or isinstance(source, Library):
        return source
    p = Path(source)
    if p.is_file():
        st = p.stat()
        return _load_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)
    if not p.is_dir():
        raise ImageError(f"{p}: no such reference index or folder")
    files = list_images(p)
    h = hashlib.sha256(str(p.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    from .engines import _usable, cache_dir
    d = _usable(cache_dir())
    cached = d / "references" / f"{h.hexdigest()[:16]}.idx" if d else None
    if cached is not None and cached.is_file():  # read once per process, as an index file is
        st = cached.stat()
        return _load_cached(str(cached), st.st_size, st.st_mtime_ns)
    lib = Library.build([p], workers=os.cpu_count() or 1, progress=len(files) >= 1000)
    if cached is not None:
        try:
            lib.save(cached)
        except OSError as e:
            log.debug("reference index not cached (%s)", e)
    return lib


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.references build DIR... --out refs.idx``; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.references", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="index folders (or files) of colour photos")
    b.add_argument("roots", nargs="+")
    b.add_argument("--out", required=True, help="the index file to write (e.g. refs.idx)")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    lib = Library.build(args.roots, workers=args.workers, progress=True)
    if not len(lib):
        print("error: no usable reference photo found", file=sys.stderr)
        return 2
    out = lib.save(args.out)
    print(f"indexed {len(lib)} photos ({len(lib.descriptors)} features) into {out} "
          f"({out.stat().st_size / 2 ** 20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
