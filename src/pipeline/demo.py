"""See the pipeline work: ``python -m pipeline.demo [IMAGES...] [--checkpoint demo] [--out demo_out]``.

With no images it restores a few of the bundled sample photos, damaged with seeded
competition-style damage, and prints their score (the ground truth is known). Images you name are
restored as they are (an image named like a competition input with a ``*_gt*``/``train_gt``
partner is scored too). Writes ``OUT/NAME.png`` side-by-side panels:
input | detected mask | inpainted gray | result | original (where known), and ``OUT/grid.png``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .io import ImageError, list_images, save_png, to_gray, to_rgb


def panel(gray: np.ndarray, r, original: np.ndarray | None) -> np.ndarray:
    """(H,W) input gray + Restoration (+ (H,W,3) original) -> (H, k*W, 3) uint8 side by side."""
    rep = lambda a: np.repeat(np.asarray(a)[..., None], 3, -1)  # noqa: E731
    cols = [rep(gray), rep(r.mask), rep(r.gray), np.asarray(r.image)]
    if original is not None:
        cols.append(original)
    sep = np.full((gray.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([c for col in cols for c in (col, sep)][:-1], 1)


def _partner_gt(path: Path) -> Path | None:
    """``.../train_input/X.png`` -> ``.../train_gt/X.png`` when it exists (competition layout)."""
    if path.parent.name.endswith("_input"):
        cand = path.parent.parent / (path.parent.name[: -len("_input")] + "_gt") / path.name
        if cand.is_file():
            return cand
    return None


def demo_items(images: list[str], n_samples: int, seed: int):
    """Yield (name, damaged gray, original RGB or None, true mask or None)."""
    from .color import pil_gray
    from .damage import apply_damage, mask_from_pair, random_damage
    from .data import SAMPLES_DIR
    if not images:
        for i, f in enumerate(list_images(SAMPLES_DIR)[:n_samples]):
            rgb = to_rgb(f)
            d = random_damage(*rgb.shape[:2], np.random.default_rng((seed, i)))
            yield f.stem, apply_damage(pil_gray(rgb), d), rgb, d.mask
        return
    for item in images:
        paths = list_images(item) if Path(item).is_dir() else [Path(item)]
        for p in paths:
            try:
                gray = to_gray(p)
                gt = _partner_gt(p)
                rgb = to_rgb(gt) if gt is not None else None
                if rgb is not None and rgb.shape[:2] != gray.shape:
                    raise ImageError(f"{gt}: ground truth size differs from {p}")
            except ImageError as e:
                print(f"error: {e}", file=sys.stderr)
                continue
            yield p.stem, gray, rgb, (mask_from_pair(gray, pil_gray(rgb)) if rgb is not None else None)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.demo``; returns the exit status (0 ok, 1 some input failed, 2 usage)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="*", help="images or folders to restore (default: bundled samples)")
    ap.add_argument("--checkpoint", default="demo", help="Pipeline folder or shipped name (default: demo)")
    ap.add_argument("--out", default="demo_out", help="folder for the side-by-side PNGs")
    ap.add_argument("-n", "--num-samples", type=int, default=6, help="bundled samples to use (max 24)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic damage")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    from stages import CheckpointError

    from .device import select_device
    from .metrics import mask_iou_f1, score
    from .pipeline import Pipeline
    try:
        pipe = Pipeline.load(args.checkpoint, device=select_device(args.device))
    except (CheckpointError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows, panels = [], []
    for name, gray, rgb, true in demo_items(args.images, args.num_samples, args.seed):
        r = pipe.restore(gray, return_intermediates=True)
        p = panel(gray, r, rgb)
        save_png(Image.fromarray(p), out / f"{name}.png")
        panels.append(p)
        if rgb is not None:
            s = score(rgb, np.asarray(r.image), true)
            iou = mask_iou_f1(true, np.asarray(r.mask) > 0)[0]
            rows.append({**s, "iou": iou})
            print(f"{name}: S={s['S']:.3f} M={s['M']:.3f} C={s['C']:.3f} score={s['score']:.3f} "
                  f"mask IoU={iou:.3f}")
        else:
            print(f"{name}: restored (no ground truth to score)")
    if not panels:
        print("error: nothing to restore", file=sys.stderr)
        return 1
    w = max(p.shape[1] for p in panels)
    grid = np.concatenate([np.pad(p, ((0, 4), (0, w - p.shape[1]), (0, 0)), constant_values=255)
                           for p in panels], 0)
    save_png(Image.fromarray(grid), out / "grid.png")
    if rows:
        m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"mean over {len(rows)}: S={m['S']:.4f} M={m['M']:.4f} C={m['C']:.4f} "
              f"score={m['score']:.4f} mask IoU={m['iou']:.4f}")
    print(f"panels (input | mask | inpainted | result | original) in {out}/, all in {out}/grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
