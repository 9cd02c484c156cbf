"""The dev benchmark: a checkpoint and the no-learning baselines on the same images.

    python benchmarks/dev_benchmark.py [--checkpoint demo] [--shared ../shared/data] [--max-images N]

Sets: Kodak24 + McMaster as 512x512 views with seeded competition-style damage (never trained on),
and the real DACON sample pairs. Prints a markdown table (S, M, C, score, mask IoU, rule IoU)
with baselines ``gray`` (the damaged gray copy) and ``telea`` (OpenCV Telea inpainting of the true
mask, kept gray), and the checkpoint with its mask replaced by the no-learning rule
(``pipeline.damage.rule_mask``) and by the true mask, so each stage's share can be seen.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.damage import rule_mask
from pipeline.data import DaconData, PhotoData
from pipeline.evaluate import evaluate
from pipeline.pipeline import Pipeline


class _MaskFrom:
    """A Pipeline wrapper whose ``restore`` uses a fixed mask source (the rule or the truth)."""

    def __init__(self, pipe, source, dataset):
        self.pipe, self.source, self.dataset, self.i = pipe, source, dataset, 0

    def restore(self, gray, return_intermediates=True):
        if self.source == "rule":
            m = rule_mask(gray)
        else:
            m = self.dataset[self.i]["mask"][0].numpy() > 0.5
        self.i += 1
        return self.pipe.restore(gray, mask=m, return_intermediates=return_intermediates, preset="competition")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--precision", default="fp32",
                    help="fp32, bf16, auto, or 'saved': the checkpoint's own (per-slot) setting")
    ap.add_argument("--variants", default="pipeline,rule_mask,true_mask,gray,telea")
    ap.add_argument("--device", default="cpu", help="cpu | cuda: where the pipeline runs")
    args = ap.parse_args()
    shared = Path(args.shared)
    sets = {}
    photos = [shared / "photos" / "kodak24", shared / "photos" / "mcmaster"]
    if all(p.is_dir() for p in photos):
        sets["kodak24+mcmaster (42, synthetic damage)"] = PhotoData(photos, image_size=512, val_fraction=1.0,
                                                                    seed=0).val
    if (shared / "dacon_samples" / "train.csv").is_file():
        sets["dacon samples (3 real pairs)"] = DaconData(shared / "dacon_samples", image_size=512,
                                                         val_fraction=1.0).val
    if not sets:
        print(f"error: no benchmark data under {shared}", file=sys.stderr)
        return 2
    pipe = Pipeline.load(args.checkpoint, device=args.device,
                         **({} if args.precision == "saved" else {"precision": args.precision}))
    print(f"| set | method | S | M | C | score | mask IoU | s/image |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ds in sets.items():
        for v in args.variants.split(","):
            t = time.time()
            if v in ("gray", "telea"):
                m = evaluate(None, ds, baseline=v, max_images=args.max_images, progress=False)
                label = f"baseline {v}" + (" (true mask)" if v == "telea" else "")
            elif v == "pipeline":
                m = evaluate(pipe, ds, max_images=args.max_images, progress=False)
                label = f"{args.checkpoint}"
            else:
                src = v.split("_")[0]
                m = evaluate(_MaskFrom(pipe, src, ds), ds, max_images=args.max_images, progress=False)
                label = f"{args.checkpoint}, {src} mask"
            dt = (time.time() - t) / max(1, m["n"])
            print(f"| {name} | {label} | {m['S']:.4f} | {m['M']:.4f} | {m['C']:.4f} | **{m['score']:.4f}** "
                  f"| {m['iou']:.4f} (rule {m['rule_iou']:.4f}) | {dt:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
