"""Score a checkpoint on the competition's terms:
``python -m pipeline.evaluate checkpoint=DIR data=<dacon|photos|samples> [baseline=gray|telea] ...``

Restores every pair at its native resolution, prints mean S, M, C, mask IoU (learned detector and
the no-learning rule side by side) and a final ``S=… M=… C=… score=…`` line; writes
``per_image.csv`` and ``grid.png`` (input | detected mask | inpainted gray | result | ground truth)
to ``out_dir``. ``baseline=gray`` scores the damaged gray copy, ``baseline=telea`` OpenCV Telea
inpainting of the true mask, kept gray.
"""
from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig

from .damage import rule_mask
from .metrics import mask_iou_f1, psnr, score
from .train import CONF_DIR, TrainingError, _instantiate

log = logging.getLogger("pipeline.evaluate")


def baseline_restore(kind: str, gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A no-learning baseline -> (RGB uint8, the gray it used)."""
    if kind == "gray":
        g = gray
    elif kind == "telea":
        g = cv2.inpaint(gray, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    else:
        raise ValueError(f"baseline={kind}: unknown (gray, telea)")
    return np.repeat(g[..., None], 3, -1), g


def evaluate(pipe, dataset, baseline: str | None = None, max_images: int | None = None,
             grid_images: int = 4, out_dir: Path | None = None, progress: bool = True) -> dict:
    """Mean metrics over ``dataset`` (items as in ``pipeline.data``) for ``pipe`` or a baseline."""
    from tqdm.auto import tqdm

    from .io import ImageError
    if hasattr(dataset, "skip_bad"):
        dataset.skip_bad = False  # score each pair once; report the bad ones
    rows, grid, failed = [], [], 0
    from .pipeline import Pipeline
    is_pipe = isinstance(pipe, Pipeline)  # (a benchmark may hand in a wrapper of its own)
    n = len(dataset) if not max_images else min(len(dataset), int(max_images))
    for i in tqdm(range(n), disable=not progress, desc="evaluate", file=sys.stderr):
        try:
            item = dataset[i]
        except ImageError as e:  # one line per bad pair; the others are still scored
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        gray = (item["gray"][0].numpy() * 255).round().astype(np.uint8)
        gt = (item["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        true = item["mask"][0].numpy() > 0.5
        rule = rule_mask(gray)
        if baseline:
            pred, filled = baseline_restore(baseline, gray, true)
            det = true
        else:
            # the competition's inputs, scored by its metric: its preset, said outright
            r = pipe.restore(gray, return_intermediates=True, **({"preset": "competition"} if is_pipe else {}))
            pred, filled, det = np.asarray(r.image), np.asarray(r.gray), np.asarray(r.mask) > 0
        s = score(gt, pred, true)
        iou, f1 = mask_iou_f1(true, det)
        rows.append({"index": i, "name": _name(dataset, i), **s, "iou": iou, "f1": f1,
                     "rule_iou": mask_iou_f1(true, rule)[0],
                     "psnr_hole": psnr(filled[true], (item["target_gray"][0].numpy() * 255).round()[true])
                     if true.any() else float("inf")})
        if len(grid) < grid_images:
            grid.append(np.concatenate([np.repeat(gray[..., None], 3, -1),
                                        np.repeat((det * 255).astype(np.uint8)[..., None], 3, -1),
                                        np.repeat(filled[..., None], 3, -1), pred, gt], 1))
    keys = ("S", "M", "C", "score", "iou", "f1", "rule_iou", "psnr_hole")
    mean = {k: float(np.mean([r[k] for r in rows if np.isfinite(r[k])] or [np.nan])) for k in keys}
    mean["n"], mean["failed"] = len(rows), failed
    if out_dir is not None and rows:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "per_image.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        if grid:
            from PIL import Image

            from .io import save_png
            h = max(g.shape[0] for g in grid)
            tiles = [np.pad(g, ((0, h - g.shape[0]), (0, 0), (0, 0))) for g in grid]
            wmax = max(t.shape[1] for t in tiles)
            tiles = [np.pad(t, ((0, 0), (0, wmax - t.shape[1]), (0, 0))) for t in tiles]
            save_png(Image.fromarray(np.concatenate(tiles, 0)), out_dir / "grid.png")
    return mean


def _name(dataset, i: int) -> str:
    if hasattr(dataset, "files"):
        return Path(dataset.files[i]).name
    if hasattr(dataset, "rows"):
        return Path(dataset.rows[i][0]).name
    return str(i)


def format_result(m: dict) -> str:
    """The final ``S=… M=… C=… score=…`` line."""
    return f"S={m['S']:.4f} M={m['M']:.4f} C={m['C']:.4f} score={m['score']:.4f}"


def run(cfg: DictConfig) -> dict:
    """Evaluate the configured checkpoint or baseline; prints and returns the mean metrics."""
    import torch

    from .device import select_device
    from .pipeline import Pipeline
    torch.manual_seed(int(cfg.seed))
    data = _instantiate(cfg.data, "data")
    dataset = data.val
    pipe = None
    if not cfg.baseline:
        pipe = Pipeline.load(str(cfg.checkpoint), device=select_device(str(cfg.device)),
                             precision=str(cfg.precision))
    m = evaluate(pipe, dataset, cfg.baseline, cfg.max_images, int(cfg.grid_images), Path(cfg.out_dir),
                 bool(cfg.progress))
    what = f"baseline={cfg.baseline}" if cfg.baseline else f"checkpoint={cfg.checkpoint}"
    print(f"{what} on {m['n']} images: mean S={m['S']:.4f} M={m['M']:.4f} C={m['C']:.4f} "
          f"mask IoU={m['iou']:.4f} (rule IoU={m['rule_iou']:.4f}) hole PSNR={m['psnr_hole']:.2f} dB")
    print(format_result(m))
    if m["failed"]:
        print(f"error: {m['failed']} pair(s) could not be read (see above)", file=sys.stderr)
    return m


def main() -> None:
    """``python -m pipeline.evaluate`` (Hydra): score a checkpoint or baseline; exit 1 if a pair was bad."""
    import hydra

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
    def _app(cfg: DictConfig) -> None:
        try:
            m = run(cfg)
        except (TrainingError, FileNotFoundError, ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if m["failed"]:
            sys.exit(1)
    _app()


if __name__ == "__main__":
    main()
