"""Colour hints on the dev benchmark: the score with 0, 1, 3, 10 and 30 true-colour points.

    python benchmarks/hints.py [--checkpoint demo] [--colorize runs/q3/colorize_hints] \\
        [--points 0,1,3,10,30] [--set dev|heldout] [--try 0.1:25 0.2:40] [--shared ../shared/data] [--max-images N]

Kodak24 + McMaster as 512x512 views with seeded competition-style damage (never trained on), as in
``benchmarks/dev_benchmark.py``. Each image gets N points drawn uniformly (seeded by the image's
index), each with the mean true colour of the 3x3 pixels around it, as a person who knows the
colours would click them. Any colorizer takes hints (each point's correction spreads to
nearby pixels of similar gray: ``hint_spread``, ``hint_tone``, chosen with ``--set heldout --try``);
one with hint channels (``--colorize``, a training run's folder) also feeds them to its network.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.data import PhotoData
from pipeline.evaluate import evaluate
from pipeline.pipeline import Pipeline
from stages import Stage


def true_points(rgb: np.ndarray, n: int, seed: int) -> list:
    """``n`` (x, y, (r, g, b)) hints from the (H,W,3) uint8 truth, uniform, 4 px from the border."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    out = []
    for x, y in zip(rng.integers(4, w - 4, n), rng.integers(4, h - 4, n)):
        c = rgb[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0).round().astype(int)
        out.append((int(x), int(y), tuple(int(v) for v in c)))
    return out


class _Hinted:
    """A Pipeline whose ``restore`` adds ``n`` true-colour points of the dataset's i-th image."""

    def __init__(self, pipe, dataset, n):
        self.pipe, self.dataset, self.n, self.i = pipe, dataset, n, 0

    def restore(self, gray, return_intermediates=True):
        rgb = (self.dataset[self.i]["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        hints = true_points(rgb, self.n, self.i) if self.n else None
        self.i += 1
        return self.pipe.restore(gray, return_intermediates=return_intermediates, hints=hints)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--colorize", help="also score this colorize stage folder (e.g. one with hint channels)")
    ap.add_argument("--points", default="0,1,3,10,30")
    ap.add_argument("--set", choices=("dev", "heldout"), default="dev",
                    help="dev: Kodak24 + McMaster; heldout: the colorizer runs' held-out training photos (for tuning)")
    ap.add_argument("--try", dest="tries", nargs="*", default=[], metavar="SPREAD:TONE[:SAT]",
                    help="hint_spread:hint_tone pairs (and a hint_saturation) to score besides the "
                         "colorizer's own (10 points)")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()
    photos = Path(args.shared) / "photos"
    if args.set == "dev":
        roots = [photos / "kodak24", photos / "mcmaster"]
        kw = dict(val_fraction=1.0, seed=0)
    else:
        roots = [photos / d for d in ("bsds500", "imagenet_sample", "camvid", "imagen", "osie", "road_imagenet", "scenes")]
        kw = dict(val_fraction=0.03, seed=14, group_pattern="^CamVid_[a-z]+_([^_]+)_")
    if not all(p.is_dir() for p in roots):
        print(f"error: no {args.set} photos under {photos}", file=sys.stderr)
        return 2
    ds = PhotoData(roots, image_size=512, **kw).val
    pipe = Pipeline.load(args.checkpoint)
    print(f"{args.set}: {len(ds) if not args.max_images else min(len(ds), args.max_images)} images")
    print("| colorizer | points | hint_spread:hint_tone:hint_saturation | S | M | C | score | s/image |")
    print("|---|---|---|---|---|---|---|---|")
    stages = {f"{args.checkpoint}'s": pipe.colorize}
    if args.colorize:
        stages[args.colorize] = Stage.load(args.colorize)
    for name, stage in stages.items():
        own = f"{stage.config['hint_spread']}:{stage.config['hint_tone']}:{stage.config['hint_saturation']}"
        rows = [(int(n), own) for n in args.points.split(",")] + [(10, t) for t in args.tries]
        for n, knobs in rows:
            spread, tone, *sat = (None if v == "None" else float(v) for v in knobs.split(":"))
            stage.set("hint_spread", spread)
            stage.set("hint_tone", tone)
            stage.set("hint_saturation", sat[0] if sat else None)
            pipe.colorize = stage
            t = time.time()
            m = evaluate(_Hinted(pipe, ds, n), ds, max_images=args.max_images, progress=False)
            dt = (time.time() - t) / max(1, m["n"])
            print(f"| {name} | {n} | {knobs} | {m['S']:.4f} | {m['M']:.4f} | {m['C']:.4f} | **{m['score']:.4f}** "
                  f"| {dt:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
