"""Issue 29: does the scratch path find a ruler-straight scratch as well as a wandering one?

    python benchmarks/straight_lines.py [--checkpoint demo] [--n 12]

On the bundled Kodak photos (the dev benchmark's, never trained on), each made an old print
(``old_print``, seed i), one white line is drawn from top to bottom a third of the way across,
then the same turned by 90 degrees (left to right): ruler-straight 2 px and 3 px, and wandering
(half a pixel a row, as ``worn`` strokes do). Prints, per scratch detector of the checkpoint
(``scratch``, ``scratch2``), the share of the line's pixels with probability > 0.7.
"""
from __future__ import annotations

import argparse

import numpy as np

import pipeline  # noqa: F401  (first: sets the OpenMP spin count)
from pipeline import Pipeline
from pipeline.color import pil_gray
from pipeline.damage import old_print
from pipeline.data import SAMPLES_DIR
from pipeline.io import to_rgb

LINES = {"straight 2 px": (2, False), "straight 3 px": (3, False), "wandering 2 px": (2, True)}


def line_mask(h: int, w: int, width: int, wander: bool, rng) -> np.ndarray:
    """(H,W) bool: a white line from top to bottom at a third of the width."""
    xs = w // 3 + (np.cumsum(rng.normal(0, 0.5, h)) if wander else np.zeros(h))
    m = np.zeros((h, w), bool)
    for y, x in enumerate(np.clip(np.round(xs).astype(int), 0, w - width)):
        m[y, x:x + width] = True
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--n", type=int, default=12)
    args = ap.parse_args()
    pipe = Pipeline.load(args.checkpoint)
    nets = {s: pipe._ready(s) for s in ("scratch", "scratch2") if pipe.stages.get(s) is not None}
    found = {(s, name, turn): [] for s in nets for name in LINES for turn in (0, 1)}
    for i, f in enumerate(sorted(SAMPLES_DIR.glob("*"))[:args.n]):
        printed = old_print(pil_gray(to_rgb(f)), np.random.default_rng(i))
        for turn in (0, 1):
            g = np.ascontiguousarray(np.rot90(printed, turn))
            for name, (width, wander) in LINES.items():
                m = line_mask(*g.shape, width, wander, np.random.default_rng(i))
                d = g.copy()
                d[m] = 255
                for s, net in nets.items():
                    found[s, name, turn].append(float((net.scratch_probabilities(d)[m] > 0.7).mean()))
    print(f"{args.checkpoint}: share of a white line's pixels found (p > 0.7), {args.n} old prints")
    print("| detector | line | top to bottom | left to right |\n|---|---|---|---|")
    for s in nets:
        for name in LINES:
            print(f"| {s} | {name} | {np.mean(found[s, name, 0]):.2f} | {np.mean(found[s, name, 1]):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
