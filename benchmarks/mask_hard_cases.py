"""Learned detector vs the no-learning rule where the rule is known to fail.

    python benchmarks/mask_hard_cases.py [--checkpoint demo]

On Kodak24 + McMaster 512x512 views: (a) "letterbox": black bars (gray 0) on the top and bottom
and a fill of 0 that touches one bar, so the fill merges with same-valued surroundings;
(b) "textured": the fill is a constant plus uniform noise (+-8), so no region is constant.
Prints the mean mask IoU of each detector per case.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline import Pipeline
from pipeline.color import pil_gray
from pipeline.damage import random_damage, rule_mask
from pipeline.data import PhotoData
from pipeline.metrics import mask_iou_f1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = ap.parse_args()
    ds = PhotoData([Path(args.shared) / "photos" / d for d in ("kodak24", "mcmaster")], 512, 1.0, 0).val
    pipe = Pipeline.load(args.checkpoint)
    res = {c: {"learned": [], "rule": []} for c in ("letterbox", "textured")}
    for i in range(len(ds)):
        rgb = (ds[i]["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        rng = np.random.default_rng((7, i))
        # (a) black bars of 40 px, the shape moved to touch the top bar, filled with 0
        g = pil_gray(rgb).copy()
        g[:40], g[-40:] = 0, 0
        d = random_damage(512, 512, rng)
        ys = np.nonzero(d.mask.any(1))[0]
        m = np.roll(d.mask, 40 - ys.min(), axis=0)
        a = g.copy()
        a[m] = 0
        # (b) textured fill
        d2 = random_damage(512, 512, rng)
        b = pil_gray(rgb).copy()
        b[d2.mask] = np.clip(d2.fill + rng.integers(-8, 9, d2.mask.sum()), 0, 255)
        for case, img, true in (("letterbox", a, m), ("textured", b, d2.mask)):
            res[case]["learned"].append(mask_iou_f1(true, pipe.detect(img))[0])
            res[case]["rule"].append(mask_iou_f1(true, rule_mask(img))[0])
    for case, r in res.items():
        print(f"{case:9s} ({len(ds)} images): learned IoU {np.mean(r['learned']):.4f}, rule IoU {np.mean(r['rule']):.4f}")


if __name__ == "__main__":
    main()
