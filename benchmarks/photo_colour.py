"""Colour as a person sees it, per preset: chroma-weighted hue error and mean chroma of colourised
gray photos, and whether a filled hole's colour continues the ring around it.

    python benchmarks/photo_colour.py [--set dev|heldout] [--checkpoint demo] [--presets competition,photo]
        [--colorize-photo STAGE_DIR] [--try temperature=0.3,saturation=0.8 ...] [--max-images N]

- **Hue error** (per image, then the mean): CIELAB chroma ``cp`` (prediction) and ``ct`` (truth),
  ``dh = |Δhue| / π`` in [0, 1]; weight ``w = cp`` where ``ct > 5``, else 0; error = Σ w·dh / Σ w
  (0: right hue, 0.5: random). Mean chroma: the mean ``cp`` over all pixels (truth's beside it).
- **Hole continuity**: a 9-px stroke of gray 235 painted across the photo, repaired with the stroke
  as the mask, on three inputs: the gray photo (coloured), the colour photo (kept colour) and a
  sepia print of it (kept tone under ``photo``). Ring: a 17x17 dilation of the hole minus the hole;
  ``rel`` = |chroma(hole) - chroma(ring)| / max(chroma(ring), 5); ``dhue``: the difference of the two
  circular mean hues, degrees. Target: rel ≤ 0.25, dhue ≤ 20.

``dev``: Kodak24 + McMaster (report); ``heldout``: the colorizers' held-out training photos (tune).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline import Pipeline
from pipeline import policy
from pipeline.color import pil_gray
from pipeline.data import PhotoData
from pipeline.io import list_images, to_rgb
from stages import Stage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_SETS = ("bsds500", "imagenet_sample", "camvid", "imagen", "osie", "road_imagenet", "scenes")


def photo_files(shared: Path, which: str, max_images: int | None = None) -> list[Path]:
    """The photos of ``dev`` (Kodak24 + McMaster) or ``heldout`` (the colorizers' 3 % split, seed 14)."""
    photos = shared / "photos"
    if which == "dev":
        files = list_images(photos / "kodak24") + list_images(photos / "mcmaster")
    else:
        files = PhotoData([photos / d for d in TRAIN_SETS], val_fraction=0.03, seed=14,
                          group_pattern="^CamVid_[a-z]+_([^_]+)_").val.files
    return files[:max_images] if max_images else files


def lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def hue_error(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """``(chroma-weighted hue error, mean chroma of pred, mean chroma of truth)`` of two (H,W,3) uint8."""
    p, t = lab(pred), lab(truth)
    cp, ct = np.hypot(p[..., 1], p[..., 2]), np.hypot(t[..., 1], t[..., 2])
    d = np.abs(np.arctan2(p[..., 2], p[..., 1]) - np.arctan2(t[..., 2], t[..., 1]))
    dh = np.minimum(d, 2 * np.pi - d) / np.pi
    w = np.where(ct > 5, cp, 0)
    return float((w * dh).sum() / max(w.sum(), 1e-9)), float(cp.mean()), float(ct.mean())


def stroke(h: int, w: int, seed: int) -> np.ndarray:
    """(H,W) bool: a 9-px polyline across the image (a painted crack)."""
    rng = np.random.default_rng(seed)
    pts = np.stack([np.linspace(0.1 * w, 0.9 * w, 5), rng.uniform(0.25 * h, 0.75 * h, 5)], 1).astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.polylines(m, [pts], False, 1, thickness=9)
    return m > 0


def continuity(out: np.ndarray, hole: np.ndarray) -> tuple[float, float]:
    """``(rel chroma difference, hue difference in degrees)`` between a hole and its 17x17 ring."""
    ring = cv2.dilate(hole.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool) & ~hole
    ab = lab(out)[..., 1:]
    c = np.hypot(ab[..., 0], ab[..., 1])
    ch, cr = c[hole].mean(), c[ring].mean()
    hue = [np.angle(np.exp(1j * np.arctan2(ab[m][:, 1], ab[m][:, 0])).mean()) for m in (hole, ring)]
    d = abs(hue[0] - hue[1])
    return float(abs(ch - cr) / max(cr, 5)), float(np.degrees(min(d, 2 * np.pi - d)))


def sepia(gray: np.ndarray) -> np.ndarray:
    g = gray.astype(np.float32)[..., None] / 255
    tint = np.array([1.0, 0.86, 0.68], np.float32)
    return np.clip(np.rint(255 * (g * tint + (1 - tint) * g ** 2)), 0, 255).astype(np.uint8)


def fit(rgb: np.ndarray, side: int = 512) -> np.ndarray:
    s = side / max(rgb.shape[:2])
    return rgb if s >= 1 else cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)),
                                         interpolation=cv2.INTER_AREA)


def score(pipe: Pipeline, files: list[Path], preset: str) -> dict:
    """The mean numbers of one preset over ``files``."""
    rows = []
    for k, f in enumerate(files):
        rgb = fit(to_rgb(f))
        gray = pil_gray(rgb)
        none = np.zeros(gray.shape, bool)
        err, cp, ct = hue_error(np.asarray(pipe.restore(gray, mask=none, preset=preset)), rgb)
        hole = stroke(*gray.shape, k)
        cont = []
        for img in (gray, rgb, sepia(gray)):
            painted = img.copy()
            painted[hole] = 235
            cont.append(continuity(np.asarray(pipe.restore(painted, mask=hole, preset=preset)), hole))
        rows.append([err, cp, ct, *np.ravel(cont)])
    m = np.mean(rows, 0)
    ok = np.mean([[r[3 + 2 * i] <= 0.25 and r[4 + 2 * i] <= 20 for i in range(3)] for r in rows], 0)
    return {"hue_error": m[0], "chroma": m[1], "truth_chroma": m[2], "rel": m[3::2], "dhue": m[4::2], "ok": ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=("dev", "heldout"), default="dev")
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--presets", default="competition,photo")
    ap.add_argument("--colorize-photo", help="a colorize stage folder for the photo preset's slot")
    ap.add_argument("--try", dest="tries", nargs="*", default=[], metavar="KEY=V,KEY=V",
                    help="photo preset variants to score (policy.Preset fields)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--shared", type=Path, default=SHARED)
    args = ap.parse_args(argv)
    if not (args.shared / "photos").is_dir():
        print(f"error: no photos under {args.shared} (--shared)", file=sys.stderr)
        return 2
    files = photo_files(args.shared, args.set, args.max_images)
    pipe = Pipeline.load(args.checkpoint)
    if args.colorize_photo:
        pipe.colorize_photo = Stage.load(args.colorize_photo)
    print(f"{args.set}: {len(files)} photos, checkpoint {args.checkpoint}"
          + (f", colorize_photo {args.colorize_photo}" if args.colorize_photo else ""))
    print("| preset | hue error | chroma (truth) | hole rel: gray / colour / toned | hole dhue | rows within target | s |")
    print("|---|---|---|---|---|---|---|")
    runs = [(p, None) for p in args.presets.split(",")] + [("photo", t) for t in args.tries]
    base = policy.PRESET["photo"]
    for name, variant in runs:
        if variant:
            kv = dict(item.split("=") for item in variant.split(","))
            policy.PRESET["photo"] = dataclasses.replace(base, **{k: float(v) for k, v in kv.items()})
        t = time.time()
        m = score(pipe, files, name)
        policy.PRESET["photo"] = base
        fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
        print(f"| {name}{' ' + variant if variant else ''} | {m['hue_error']:.3f} | {m['chroma']:.1f} "
              f"({m['truth_chroma']:.1f}) | {fmt(m['rel'])} | {fmt(m['dhue'])} | {fmt(m['ok'])} "
              f"| {time.time() - t:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
