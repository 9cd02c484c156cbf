"""Real old prints next to synthetic ones, to compare the look of the damage (docs/old_print_look.jpg).

    python tools/old_print_grid.py [--shared ../shared/data] [--seed 0] [--out docs/old_print_look.jpg]

Top row: the real scanned prints of ``old_photos`` (gray, 256 px high). Below: training photos made
old prints (``pipeline.damage.old_print``) and damaged with every old-print kind
(``OLD_PRINT_KINDS``: scratches, cracks, spots, tears, crack webs, creases, flakes), at the same size,
seeded. Never the dev-benchmark photos.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.color import pil_gray
from pipeline.damage import OLD_PRINT_KINDS, add_fine_detail, apply_real_damage, old_print, real_damage

H = 256


def _row(images: list[np.ndarray], width: int) -> np.ndarray:
    row = np.full((H, width), 255, np.uint8)
    x = 0
    for im in images:
        im = np.asarray(Image.fromarray(im).resize((max(1, round(im.shape[1] * H / im.shape[0])), H), Image.LANCZOS))
        if x + im.shape[1] > width:
            break
        row[:, x:x + im.shape[1]] = im
        x += im.shape[1] + 6
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "old_print_look.jpg"))
    args = ap.parse_args()
    shared = Path(args.shared)
    real = [np.asarray(Image.open(f).convert("L")) for f in sorted((shared / "old_photos").glob("*"))]
    if not real:
        print(f"error: no old prints under {shared / 'old_photos'}", file=sys.stderr)
        return 2
    width = 1600
    pool = sorted(p for d in ("bsds500", "osie", "scenes", "imagenet_sample")
                  for p in (shared / "photos" / d).rglob("*.jpg"))
    random.Random(args.seed).shuffle(pool)
    rows, k = [_row(real, width)], 0
    for r in range(args.rows):
        synth = []
        for _ in range(7):
            rng = np.random.default_rng((args.seed, k))
            gray = pil_gray(np.asarray(Image.open(pool[k]).convert("RGB")))
            k += 1
            s = H / gray.shape[0]
            gray = np.asarray(Image.fromarray(gray).resize((round(gray.shape[1] * s), H), Image.LANCZOS))
            printed = old_print(add_fine_detail(gray, rng) if rng.random() < 0.5 else gray, rng)
            synth.append(apply_real_damage(printed, real_damage(*printed.shape, rng, kinds=OLD_PRINT_KINDS, worn=True),
                                              rng)[0])
        rows.append(_row(synth, width))
    grid = np.concatenate([np.concatenate([r, np.full((8, width), 255, np.uint8)]) for r in rows])
    Image.fromarray(grid).save(args.out, quality=85)
    print(f"wrote {args.out}: top row real ({len(real)}), {args.rows} rows synthetic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
