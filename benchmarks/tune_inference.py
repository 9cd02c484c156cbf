"""Tune inference-only knobs on the held-out validation split of the TRAINING photos (never the dev
benchmark): the colorizer's annealed-mean temperature and saturation, the inpainter's work size.

    python benchmarks/tune_inference.py --checkpoint demo --roots ../shared/data/photos/bsds500 ../shared/data/photos/imagenet_sample

Uses the true mask, so each knob is judged on its own term (C for colour, M for the hole).
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from pipeline import Pipeline
from pipeline.data import PhotoData
from pipeline.metrics import score
from stages import Stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--roots", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=3, help="the split seed of the colorizer's training run")
    ap.add_argument("--val-fraction", type=float, default=0.03)
    ap.add_argument("--temperatures", default="0.2,0.3,0.38,0.5")
    ap.add_argument("--saturations", default="1.0,1.25")
    ap.add_argument("--work-sizes", default="256,384,none")
    ap.add_argument("--inpaint", help="swap in this inpaint stage (a training run's out_dir)")
    ap.add_argument("--colorize", help="swap in this colorize stage (a training run's out_dir)")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = PhotoData(args.roots, image_size=512, val_fraction=args.val_fraction, seed=args.seed).val
    items = [ds[i] for i in range(len(ds))]
    pipe = Pipeline.load(args.checkpoint, precision=args.precision)
    for slot in ("inpaint", "colorize"):
        if getattr(args, slot):
            setattr(pipe, slot, Stage.load(getattr(args, slot)).eval())

    def run(label):
        rows = []
        for it in items:
            gray = (it["gray"][0].numpy() * 255).round().astype(np.uint8)
            gt = (it["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            m = it["mask"][0].numpy() > 0.5
            rows.append(score(gt, np.asarray(pipe.restore(gray, mask=m)), m))
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"{label}: S={mean['S']:.4f} M={mean['M']:.4f} C={mean['C']:.4f} score={mean['score']:.4f}",
              flush=True)

    col, inp = pipe.colorize, pipe.inpaint
    print(f"{len(items)} held-out images")
    t0, s0, w0 = col.config["temperature"], col.config["saturation"], inp.config["work_size"]
    for t, s in itertools.product(filter(None, args.temperatures.split(",")), args.saturations.split(",")):
        col.config["temperature"], col.config["saturation"] = float(t), float(s)
        run(f"temperature={t} saturation={s}")
    col.config["temperature"], col.config["saturation"] = t0, s0
    for w in filter(None, args.work_sizes.split(",")):
        inp.config["work_size"] = None if w == "none" else int(w)
        run(f"inpaint work_size={w}")
    inp.config["work_size"] = w0


if __name__ == "__main__":
    main()
