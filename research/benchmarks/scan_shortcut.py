"""Issue 29: does the scratch detector find damage seen through a scan, or only damage drawn on
top of a finished print?

    python benchmarks/scan_shortcut.py [--checkpoint demo] [--n 24] [--shared ../shared/data]

Photos of ``photos/scenes`` at 256 px are made old prints (``old_print``) with worn damage of every
old-print kind (shatter too), seeds 100+i. The scratch network alone (probability > 0.7, no
post-processing, no gate) then sees the damaged print as drawn, and after one step a real scan
always adds: blur, JPEG, both, film grain, a lower resolution. Prints recall@2px against the damage
as drawn for each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

import pipeline  # noqa: F401  (first: sets the OpenMP spin count)
from pipeline import Pipeline
from pipeline.damage import OLD_PRINT_KINDS, add_grain, apply_real_damage, old_print, real_damage
from pipeline.io import list_images, to_gray

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _jpeg(g: np.ndarray, q: int = 60) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_GRAYSCALE)


def _blur(g: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(cv2.GaussianBlur(g.astype(np.float32), (0, 0), 0.8)), 0, 255).astype(np.uint8)


STEPS = {
    "nothing (as drawn)": lambda g, rng: g,
    "blur, sigma 0.8 px": lambda g, rng: _blur(g),
    "JPEG, quality 60": lambda g, rng: _jpeg(g),
    "blur and JPEG": lambda g, rng: _jpeg(_blur(g)),
    "film grain, sigma 4": lambda g, rng: add_grain(g, rng, 4),
    "0.7x and back": lambda g, rng: cv2.resize(cv2.resize(g, (180, 180), interpolation=cv2.INTER_AREA), (256, 256),
                                               interpolation=cv2.INTER_CUBIC),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--shared", default=str(SHARED))
    args = ap.parse_args()
    folder = Path(args.shared) / "photos" / "scenes"
    if not folder.is_dir():
        print(f"no photos under {folder}: nothing to measure")
        return 0
    import torch
    from stages.nets import gray_batch
    pipe = Pipeline.load(args.checkpoint)
    net = pipe._ready("scratch") if pipe.scratch is not None else pipe._ready("mask")
    recall = {k: [] for k in STEPS}
    for i, f in enumerate(list_images(folder)[:args.n]):
        rng = np.random.default_rng(100 + i)
        gray = np.asarray(Image.fromarray(to_gray(f)).resize((256, 256), Image.BICUBIC))
        printed = old_print(gray, rng)
        damaged, truth = apply_real_damage(printed, real_damage(256, 256, rng, OLD_PRINT_KINDS + ("shatter",), True), rng)
        if not truth.any():
            continue
        for name, step in STEPS.items():
            with torch.inference_mode():
                p = torch.sigmoid(net(gray_batch([step(damaged, rng)], net.device)))[0, 0].float().cpu().numpy()
            near = cv2.dilate((p > 0.7).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            recall[name].append((near & truth).sum() / truth.sum())
    print(f"{args.checkpoint}: {len(recall['blur and JPEG'])} prints of {folder}")
    print("| the damaged print then gets | recall@2px |\n|---|---|")
    for name, v in recall.items():
        print(f"| {name} | {np.mean(v):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
