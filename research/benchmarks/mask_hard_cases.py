"""Learned detector vs the no-learning rule where the rule is known to fail.

    python benchmarks/mask_hard_cases.py [--checkpoint demo] [--damage auto|shape] [--work-sizes 256,192] [--roots DIR ...]

On Kodak24 + McMaster 512x512 views (or the held-out split of ``--roots``, to tune on): (a) "letterbox": black bars (gray 0) on the top and bottom
and a fill of 0 that touches one bar, so the fill merges with same-valued surroundings;
(b) "textured": the fill is a constant plus uniform noise (+-8), so no region is constant;
(c) "plain": ordinary competition-style damage. Prints the mean mask IoU of each detector per case
(the learned one at each ``--work-sizes`` value) and the detector's median ms per image.
"""
from __future__ import annotations

import argparse
import time
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
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ap.add_argument("--work-sizes", default="", help="mask work sizes to compare (default: the checkpoint's)")
    ap.add_argument("--roots", nargs="*", help="use the held-out split of these photo folders instead")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--damage", default=None, help="what the detector looks for (default: the pipeline's own, "
                    "auto with a scratch detector: a textured fill is no constant-gray shape there)")
    args = ap.parse_args()
    if args.roots:
        ds = PhotoData(args.roots, 512, 0.03, args.seed).val
    else:
        ds = PhotoData([Path(args.shared) / "photos" / d for d in ("kodak24", "mcmaster")], 512, 1.0, 0).val
    pipe = Pipeline.load(args.checkpoint)
    sizes = [int(w) for w in args.work_sizes.split(",") if w] or [pipe.mask.config["work_size"]]
    methods = [f"learned@{w}" for w in sizes] + ["rule"]
    res = {c: {k: [] for k in methods} for c in ("letterbox", "textured", "plain")}
    times = {w: [] for w in sizes}
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
        # (c) plain
        d3 = random_damage(512, 512, rng)
        c = pil_gray(rgb).copy()
        c[d3.mask] = d3.fill
        for case, img, true in (("letterbox", a, m), ("textured", b, d2.mask), ("plain", c, d3.mask)):
            for w in sizes:
                pipe.mask.set("work_size", w)
                t = time.perf_counter()
                found = pipe.detect(img, args.damage)
                times[w].append(time.perf_counter() - t)
                res[case][f"learned@{w}"].append(mask_iou_f1(true, found)[0])
            res[case]["rule"].append(mask_iou_f1(true, rule_mask(img))[0])
    print(f"{len(ds)} images; mean mask IoU")
    print("| case | " + " | ".join(methods) + " |")
    for case, r in res.items():
        print(f"| {case} | " + " | ".join(f"{np.mean(r[k]):.4f}" for k in methods) + " |")
    print("| detect ms | " + " | ".join(f"{1000 * np.median(times[w]):.1f}" for w in sizes) + " | |")


if __name__ == "__main__":
    main()
