"""Tune inference-only knobs on the held-out validation split of the TRAINING photos (never the dev
benchmark): the colorizer's temperature, saturation, work size and flip TTA, the inpainter's work
size and the pipeline's inpainting context.

    python benchmarks/tune_inference.py --roots ../shared/data/photos/bsds500 ../shared/data/photos/imagenet_sample \\
        [--checkpoint demo] [--seed 3] [--image-size 512] [--colorize "192:0.6:0.1:0,128:0.6:0.1:1"] \\
        [--inpaint-work-sizes 256,none] [--contexts 64,128] \\
        [--set colorize.prior_shift=0.03 ...] [--try "colorize.prior_shift=0.02 colorize.hole_saturation=0.6" ...]

``--seed`` picks the split (3: the colorizer's runs, 2: the inpainter's, on bsds500 + imagenet_sample;
14 with all seven training folders and ``--group-pattern '^CamVid_[a-z]+_([^_]+)_'``: the quality-v2
runs, ``conf/data/shared_photos.yaml``). Each ``--colorize`` item is ``work_size:saturation:temperature:tta``
(tta: 1, 2, 4 or 8 flips/transposes). The training photos are ~500x375, so at
``--image-size 512`` they are upscaled ~1.37x; ``--image-size 368`` scores them near their native
scale (the colorizer's best work size is about 0.35-0.45 of the native image size). Uses the true
mask, so each knob is judged on its own term (C for colour, M for the hole). ``--set`` changes the
pipeline before every run (``pipeline.assemble``'s ``[SLOT.]KEY=VALUE``); each ``--try`` item is one
more run with its space-separated settings on top.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from pipeline import Pipeline
from pipeline.assemble import apply_setting
from pipeline.data import PhotoData
from pipeline.metrics import score
from stages import Stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--roots", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=3, help="split seed: 3 = the colorizer's runs, 2 = the inpainter's")
    ap.add_argument("--val-fraction", type=float, default=0.03)
    ap.add_argument("--group-pattern", default=None, help="split groups, as data.group_pattern")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--colorize", default="", help="work_size:saturation:temperature:tta items, comma-separated")
    ap.add_argument("--inpaint-work-sizes", default="", help="e.g. 192,256,none")
    ap.add_argument("--contexts", default="", help="e.g. 64,128")
    ap.add_argument("--inpaint-tta", default="", help="e.g. 2,4,8")
    ap.add_argument("--telea", action="store_true", help="also score OpenCV Telea's gray (no colour)")
    ap.add_argument("--inpaint", help="swap in this inpaint stage (a training run's out_dir)")
    ap.add_argument("--colorize-stage", help="swap in this colorize stage (a training run's out_dir)")
    ap.add_argument("--precision", default="fp32",
                    help="fp32, bf16, auto, or 'saved': the checkpoint's own (per-slot) setting")
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                    help="[SLOT.]KEY=VALUE settings applied before every run (as pipeline.assemble --set)")
    ap.add_argument("--try", dest="tries", nargs="*", action="extend", default=[], metavar="SETTINGS",
                    help="one run per item: space-separated [SLOT.]KEY=VALUE settings on top of --set")
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = PhotoData(args.roots, image_size=args.image_size, val_fraction=args.val_fraction, seed=args.seed,
                   group_pattern=args.group_pattern).val
    items = [ds[i] for i in range(len(ds))]
    pipe = Pipeline.load(args.checkpoint, **({} if args.precision == "saved" else {"precision": args.precision}))
    if args.inpaint:
        pipe.inpaint = Stage.load(args.inpaint)
    if args.colorize_stage:
        pipe.colorize = Stage.load(args.colorize_stage)

    def run(label, telea=False):
        rows = []
        for it in items:
            gray = (it["gray"][0].numpy() * 255).round().astype(np.uint8)
            gt = (it["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            m = it["mask"][0].numpy() > 0.5
            if telea:
                out = np.repeat(cv2.inpaint(gray, m.astype(np.uint8), 3, cv2.INPAINT_TELEA)[..., None], 3, -1)
            else:
                out = np.asarray(pipe.restore(gray, mask=m))
            rows.append(score(gt, out, m))
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"{label}: S={mean['S']:.4f} M={mean['M']:.4f} C={mean['C']:.4f} score={mean['score']:.4f}",
              flush=True)

    for item in args.set:
        if err := apply_setting(pipe, item):
            ap.error(f"--set {item}: {err}")
    col, inp = pipe.colorize.config, pipe.inpaint.config
    print(f"{len(items)} held-out images at {args.image_size} px (split seed {args.seed})")
    if args.telea:
        run("baseline telea (gray)", telea=True)
    run(f"as shipped (colorize {col['work_size']}:{col['saturation']}:{col['temperature']}:"
        f"{col['tta']} prior_shift {col['prior_shift']}, inpaint work_size {inp['work_size']} "
        f"tta {inp['tta']}, context {inp['context']}, hole_saturation {col['hole_saturation']})")
    c0, i0 = dict(col), dict(inp)
    for item in filter(None, args.colorize.split(",")):
        ws, sat, t, tta = item.split(":")
        col.update(work_size=int(ws), saturation=float(sat), temperature=float(t), tta=int(tta))
        run(f"colorize {item}")
    col.update(c0)
    for w in filter(None, args.inpaint_work_sizes.split(",")):
        inp["work_size"] = None if w == "none" else int(w)
        run(f"inpaint work_size={w}")
    inp.update(i0)
    for n in filter(None, args.inpaint_tta.split(",")):
        inp["tta"] = int(n)
        run(f"inpaint tta={n}")
    inp.update(i0)
    for c in filter(None, args.contexts.split(",")):
        inp["context"] = int(c)
        run(f"context={c}")
    inp.update(i0)
    for item in args.tries:
        keep = {k: dict(s.config) for k, s in pipe.stages.items()}
        for setting in item.split():
            if err := apply_setting(pipe, setting):
                ap.error(f"--try {setting}: {err}")
        run(item)
        for k, s in pipe.stages.items():
            s.config.update(keep[k])


if __name__ == "__main__":
    main()
