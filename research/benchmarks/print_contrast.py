"""Does ``normalise`` (``stages.processors.stretch_contrast``) give a faded print its tones back?

    python benchmarks/print_contrast.py [--max-images 50] [--below 150,200,220] [--shared ../shared/data]

On held-out training photos (the 3 % split of ``--seed 19``, never the dev benchmark) made old
prints (``pipeline.damage.old_print``, generator seeds (31, i): fading, tone curve, blur, paper,
grain, JPEG): the print's gray against the clean photo's gray (PSNR, SSIM) as it is and stretched,
the colour the demo colorizer gives each (RGB SSIM and the C term against the true colour), and
how many clean photos the stretch would change (why it is off by default).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline import Pipeline
from pipeline.damage import old_print
from pipeline.data import PhotoData
from stages.metrics import _ssim, hue_correlation, psnr
from stages.processors import stretch_contrast


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--max-images", type=int, default=50)
    ap.add_argument("--below", default="150,200,220", help="stretch_contrast's range thresholds to compare")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    args = ap.parse_args()
    photos = Path(args.shared) / "photos"
    roots = [photos / d for d in ("bsds500", "imagenet_sample", "camvid", "imagen", "osie", "road_imagenet", "scenes")]
    if not all(p.is_dir() for p in roots):
        print(f"error: no training photos under {photos}", file=sys.stderr)
        return 2
    from skimage.metrics import structural_similarity
    ds = PhotoData(roots, image_size=512, val_fraction=0.03, seed=19, group_pattern="^CamVid_[a-z]+_([^_]+)_").val
    pipe = Pipeline.load(args.checkpoint)
    belows = [int(b) for b in args.below.split(",")]
    rows = {"print as it is": []} | {f"stretched (below {b})": [] for b in belows}
    clean_changed = dict.fromkeys(belows, 0)
    n = min(len(ds), args.max_images)
    for i in range(n):
        item = ds[i]
        gray = (item["gray"][0].numpy() * 255).round().astype(np.uint8)
        rgb = (item["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        printed = old_print(gray, np.random.default_rng((31, i)))
        versions = [printed] + [stretch_contrast(printed, below=b) for b in belows]
        for (name, out), g in zip(rows.items(), versions):
            colour = pipe.color(g)
            out.append((psnr(gray, g), structural_similarity(gray, g, data_range=255), _ssim(rgb, colour, 255),
                        hue_correlation(rgb, colour)))
        for b in belows:
            clean_changed[b] += int(not np.array_equal(stretch_contrast(gray, below=b), gray))
    print(f"{n} held-out photos made old prints; {args.checkpoint}'s colorizer")
    print("| gray | PSNR to the clean gray | SSIM | colour: RGB SSIM | C | clean photos it changes |")
    print("|---|---|---|---|---|---|")
    for (name, vals), b in zip(rows.items(), [None] + belows):
        m = np.mean(vals, 0)
        changed = "" if b is None else f"{clean_changed[b]} / {n}"
        print(f"| {name} | {m[0]:.2f} dB | {m[1]:.4f} | {m[2]:.4f} | {m[3]:.4f} | {changed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
