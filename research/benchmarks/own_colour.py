"""How well ``stages.processors.own_colour`` tells colour photos from gray or toned prints.

    python benchmarks/own_colour.py [--shared ../shared/data] [--per-set 40] [--thresholds 2.5,3,3.5,4,4.5]

Colour photos: Kodak24, McMaster, the DACON samples' truths and ``--per-set`` photos of each training
set. Toned prints: each of them made gray, tinted (sepia, cyan, warm, brown or neutral, strongest in
the mid-tones), with grain (sigma 0-4) and JPEG (quality 60-95), seeded. Prints, per threshold, the
share of colour photos kept and of toned prints coloured anew, and the verdict on the real old
prints of ``old_photos`` (old_a-d are colour, scratched_a/b sepia).
"""
from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from stages.processors import own_colour

TINTS = {"sepia": (1.07, 0.74, 0.43), "gray": (1, 1, 1), "cyan": (0.55, 0.8, 1.0), "warm": (1.0, 0.9, 0.75),
         "brown": (0.9, 0.7, 0.5)}


def toned(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    g = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)[..., None] / 255
    tint = np.array(TINTS[rng.choice(list(TINTS))])
    out = g * (1 - 0.6 * (1 - g)) * tint + 0.6 * g * (1 - g)
    out = np.clip(out / out.max() * rng.uniform(0.8, 1.0) * 255 + rng.normal(0, rng.uniform(0, 4), out.shape), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(out.astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(60, 95)))
    return np.asarray(Image.open(buf).convert("RGB"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ap.add_argument("--per-set", type=int, default=40)
    ap.add_argument("--thresholds", default="2.5,3,3.5,4,4.5")
    args = ap.parse_args()
    photos = Path(args.shared) / "photos"
    if not photos.is_dir():
        print(f"error: no photos under {photos}", file=sys.stderr)
        return 2
    files = sorted((photos / "kodak24").glob("*")) + sorted((photos / "mcmaster").glob("*"))
    files += sorted((Path(args.shared) / "dacon_samples" / "train_gt").glob("*.png"))
    for d in ("bsds500", "imagenet_sample", "camvid", "imagen", "osie", "road_imagenet", "scenes"):
        found = sorted(p for p in (photos / d).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        random.Random(0).shuffle(found)
        files += found[:args.per_set]
    rng = np.random.default_rng(0)
    colour = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    tones = [toned(c, rng) for c in colour]
    print(f"{len(colour)} colour photos, {len(tones)} toned prints")
    print("| threshold | colour photos kept | toned prints coloured anew |")
    print("|---|---|---|")
    for t in (float(v) for v in args.thresholds.split(",")):
        kept = np.mean([own_colour(c, threshold=t) for c in colour])
        anew = np.mean([not own_colour(c, threshold=t) for c in tones])
        print(f"| {t} | {kept:.3f} | {anew:.3f} |")
    for f in sorted((Path(args.shared) / "old_photos").glob("*")):
        print(f"{f.name}: {'keeps its colour' if own_colour(np.asarray(Image.open(f).convert('RGB'))) else 'coloured anew'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
