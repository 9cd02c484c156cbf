"""What a run writes and reads back: the metrics log, sample grids, the resume state in ``last/``,
and ``init_from`` (starting from another stage folder's weights)."""
from __future__ import annotations

import csv
import logging
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from stages import Stage
from stages.checkpoint import atomic_write_bytes

from .config import TrainingError

log = logging.getLogger("pipeline.train")


class MetricLog:
    """Scalars to ``metrics.csv`` (step, tag, value) and, when installed, TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool, resume_step: int = 0):
        self.path = out / "metrics.csv"
        if self.path.exists() and resume_step > 0:  # drop rows written after the resumed checkpoint
            rows = [r for r in csv.reader(open(self.path)) if r and r[0] != "step" and int(r[0]) <= resume_step]
        else:
            rows = []
        with open(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "tag", "value"])
            w.writerows(rows)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step or None)
            except Exception:  # tensorboard not installed: CSV only
                self.tb = None

    def log(self, step: int, scalars: dict) -> None:
        """Append ``{tag: value}`` at ``step``."""
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for k, v in scalars.items():
                w.writerow([step, k, f"{float(v):.6g}"])
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, float(v), step)

    def close(self):
        """Flush and close the TensorBoard writer."""
        if self.tb is not None:
            self.tb.close()


def save_grid(panels: list, path: Path, max_rows: int = 4) -> None:
    """Panels (list of (B,3,H,W) in [0,1]) -> one PNG: a row per sample, a column per panel."""
    from PIL import Image

    from ..io import save_png
    rows = []
    for i in range(min(max_rows, panels[0].shape[0])):
        rows.append(torch.cat([p[i].float().cpu().clamp(0, 1) for p in panels], 2))
    grid = torch.cat(rows, 1).permute(1, 2, 0).numpy()
    save_png(Image.fromarray((grid * 255).round().astype(np.uint8)), path)


def _save_state(out: Path, stage: Stage, opt, sched, step: int, cfg: DictConfig, batches: int) -> None:
    """``out/last``: weights (safetensors) + optimizer/scheduler/RNG/step and the number of
    batches drawn from the data stream (torch.save of plain tensors and containers, read back
    with ``weights_only=True``)."""
    import io as _io
    last = out / "last"
    stage.save(last)
    state = {"step": step, "batches": batches, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "torch_rng": torch.get_rng_state(), "python_rng": list(random.getstate()[1]),
             "python_rng_pos": random.getstate()[2],
             "stage": stage.name}
    buf = _io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(last / "trainer_state.pt", buf.getvalue())
    atomic_write_bytes(last / "train_config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())


def _load_state(out: Path, stage: Stage, opt, sched) -> tuple[int, int]:
    """Restore ``out/last`` into the given objects; returns ``(step, batches drawn)``."""
    last = out / "last"
    f = last / "trainer_state.pt"
    if not f.is_file():
        return 0, 0
    from stages import CheckpointError
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{f}: unreadable resume state ({type(e).__name__}: {e})") from None
    if state.get("stage") != stage.name:
        raise CheckpointError(f"{last}: resume state is for stage {state.get('stage')!r}, not {stage.name!r}")
    loaded = type(stage).load(last)
    stage.load_state_dict(loaded.state_dict())
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate((3, tuple(state["python_rng"]), state["python_rng_pos"]))
    return int(state["step"]), int(state.get("batches", state["step"]))


def _init_from(stage: Stage, path) -> None:
    """Start from the weights of the stage folder ``path``. Tensors it lacks (blocks this config
    adds, e.g. ``model.fourier_blocks``) keep their fresh initialisation; tensors it has that this
    config lacks, or of another shape, stop the run with one line."""
    src = type(stage).load(path).state_dict()
    own = stage.state_dict()
    for k in [k for k in src if k in own and _widened(src[k], own[k])]:
        # a first convolution that takes more input channels (e.g. model.hints): the new ones
        # start at zero, so the network computes what it did until training moves them
        log.info("init_from=%s: %s takes %d more input channels (zero)", path, k, own[k].shape[1] - src[k].shape[1])
        src[k] = torch.cat([src[k], src[k].new_zeros(src[k].shape[0], own[k].shape[1] - src[k].shape[1],
                                                      *src[k].shape[2:])], 1)
    extra = sorted(set(src) - set(own))
    bad = [k for k in src if k in own and src[k].shape != own[k].shape]
    if extra or bad:
        what = f"{len(extra)} tensors this config lacks (e.g. {extra[0]})" if extra else \
            f"tensor {bad[0]} of shape {tuple(src[bad[0]].shape)}, this config has {tuple(own[bad[0]].shape)}"
        raise TrainingError(f"init_from={path}: does not fit model.* ({what})")
    missing = sorted(set(own) - set(src))
    stage.load_state_dict(src, strict=False)
    if missing:
        log.info("init_from=%s: %d tensors start fresh (not in it), e.g. %s", path, len(missing), missing[0])


def _widened(src: torch.Tensor, own: torch.Tensor) -> bool:
    """A convolution weight (out, in, kh, kw) whose ``own`` version has more input channels."""
    return src.dim() == own.dim() == 4 and src.shape[1] < own.shape[1] and \
        src.shape[:1] + src.shape[2:] == own.shape[:1] + own.shape[2:]
