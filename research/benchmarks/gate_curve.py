"""The damage policy's gate, traded: undamaged photos changed against recall on synthetic prints,
for a grid of gate settings (each detector runs once per image; the settings reuse its maps).

    python research/benchmarks/gate_curve.py [--only held|dev] [--max-images N]
"""
import argparse
import dataclasses
import hashlib
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from real_damage import SHARED, _found, photo_sets, synthetic_prints  # noqa: E402

from pipeline import Pipeline  # noqa: E402
from pipeline.color import pil_gray  # noqa: E402
from stages import MaskDetector  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="held")
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()
    pipe = Pipeline.load("demo")
    memo = {}
    sp, vp = MaskDetector.scratch_probabilities, MaskDetector.view_probabilities

    def key(self, g, *rest):
        return (id(self), hashlib.sha1(g.tobytes()).hexdigest(), g.shape, *rest)

    def cached_sp(self, g, tile=(1024, 128)):
        k = key(self, g)
        if k not in memo:
            memo[k] = sp(self, g, tile)
        return memo[k]

    def cached_vp(self, g, view, tile=(1024, 128)):
        k = key(self, g, view)
        if k not in memo:
            memo[k] = vp(self, g, view, tile)
        return memo[k]
    MaskDetector.scratch_probabilities, MaskDetector.view_probabilities = cached_sp, cached_vp
    for name, photos in photo_sets(SHARED, args.max_images, 19, args.only).items():
        prints = synthetic_prints(photos)
        modern = [pil_gray(r) for r, _, _ in photos]
        clean = [p for _, p, _ in prints]
        print(f"{name}: {len(modern)} photos, {len(prints)} prints")
        print("| threshold | min_damage | min_line | min_agree | modern changed | undamaged prints changed | print recall@2px | precision |")
        print("|---|---|---|---|---|---|---|---|")
        base = pipe.damage_policy
        for thr, md, ml, ma in itertools.product((0.7, 0.8, 0.9), (0.007, 0.015, 0.03), (0.5, 0.7), (0.002, 0.0)):
            pipe.damage_policy = dataclasses.replace(base, threshold=thr, min_damage=md, min_line=ml, min_agree=ma)
            ch = sum(bool(pipe.detect(g).any()) for g in modern)
            chp = sum(bool(pipe.detect(g).any()) for g in clean)
            rp = np.array([_found(t, pipe.detect(d))[:2] for d, _, t in prints])
            print(f"| {thr} | {md} | {ml} | {ma} | {ch} | {chp} | {rp[:, 0].mean():.3f} | {np.nanmean(rp[:, 1]):.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
