"""``trainer.strategy``: one process, or DistributedDataParallel under ``torchrun``."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from stages import Stage

from .config import TrainingError

log = logging.getLogger("pipeline.train")


class LossModule(torch.nn.Module):
    """What DistributedDataParallel wraps: ``forward(batch)`` returns ``stage.loss(batch)``, so
    the stage keeps its own ``loss`` and is itself what gets saved (``module.stage``)."""

    def __init__(self, stage: Stage):
        super().__init__()
        self.stage = stage

    def forward(self, batch: dict) -> dict:
        return self.stage.loss(batch)


def unused_parameters(stage: Stage, batch: dict, autocast_fn=None) -> list[str]:
    """Names of trainable parameters that ``stage.loss(batch)`` does not reach (probed on a copy,
    so the stage's weights, norm statistics and RNG-free state are untouched)."""
    import contextlib
    import copy
    probe = copy.deepcopy(stage).train()
    with (autocast_fn or contextlib.nullcontext)():
        loss = probe.loss(batch)["loss"]
    loss.backward()
    return [n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None]


class Distributed:
    """``trainer.strategy``: ``single``, or ``ddp`` under ``torchrun`` (one process per GPU or,
    on the CPU, per gloo worker): ``wrap`` returns ``torch.nn.parallel.DistributedDataParallel``
    around the stage's loss module, which broadcasts rank 0's weights and buffers at start and
    buffers (norm statistics) at every forward, and averages gradients with bucketed all-reduces
    overlapped with backward. Every rank reads its own shard of the data stream
    (``StreamSampler``); only rank 0 validates, logs and writes checkpoints.
    """

    def __init__(self, strategy: str, device: torch.device):
        if strategy not in ("single", "ddp"):
            raise TrainingError(f"trainer.strategy={strategy}: unknown (single, ddp)")
        self.on = strategy == "ddp"
        self.rank, self.world, self.device = 0, 1, device
        if not self.on and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise TrainingError(f"{os.environ['WORLD_SIZE']} processes (torchrun) but trainer.strategy=single: each "
                                "would train alone into the same out_dir; add trainer.strategy=ddp")
        if not self.on:
            return
        import torch.distributed as td
        if "WORLD_SIZE" not in os.environ:
            raise TrainingError("trainer.strategy=ddp needs torchrun (torchrun --nproc_per_node=N -m pipeline.train ...)")
        if device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        if not td.is_initialized():
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.td, self.rank, self.world = td, td.get_rank(), td.get_world_size()

    def wrap(self, stage: Stage, probe: dict | None = None, autocast_fn=None) -> torch.nn.Module:
        """The module whose ``forward(batch)`` returns the stage's loss dict. Under DDP,
        parameters that a backward on ``probe`` (a batch) leaves without gradient (e.g. encoder
        blocks deeper than ``encoder_depth`` uses) stop requiring gradients, so DDP's reducer
        does not wait for them (no ``find_unused_parameters`` traversal every step)."""
        module = LossModule(stage)
        if not self.on:
            return module
        from torch.nn.parallel import DistributedDataParallel
        if probe is not None:
            for name in unused_parameters(stage, probe, autocast_fn):
                stage.get_parameter(name).requires_grad_(False)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)

    def agree_on_resume(self, step: int, batches: int, out: Path) -> None:
        """Every rank must resume at rank 0's step: a rank that read another ``last/`` (nodes
        without a shared filesystem) would take the collectives out of step. One line, then stop."""
        if not self.on:
            return
        mine = torch.tensor([step, batches], dtype=torch.float64, device=self.device)
        lo, hi = mine.clone(), mine.clone()
        self.td.all_reduce(lo, op=self.td.ReduceOp.MIN)
        self.td.all_reduce(hi, op=self.td.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise TrainingError(f"resume: the ranks found different states in {out}/last (steps {int(lo[0])}-"
                                f"{int(hi[0])}): put out_dir on a filesystem every node shares, or copy rank 0's "
                                "last/ to each node")

    def agree(self, finite: bool, stopping: bool) -> tuple[bool, bool]:
        """All ranks take the same branch: finite only if finite everywhere, stop if any stops."""
        if not self.on:
            return finite, stopping
        flags = torch.tensor([0.0 if finite else 1.0, 1.0 if stopping else 0.0], device=self.device)
        self.td.all_reduce(flags, op=self.td.ReduceOp.MAX)
        return flags[0].item() == 0, flags[1].item() > 0

    def finish(self, module: torch.nn.Module) -> None:
        """Log each rank's final weight digest (they must agree) and leave the process group."""
        if not self.on:
            return
        import hashlib
        for b in module.buffers():  # what DDP would broadcast at the next forward: rank 0's statistics
            self.td.broadcast(b.data, 0)
        digest = hashlib.sha1()
        for k, v in sorted(module.state_dict().items()):
            digest.update(v.detach().float().cpu().numpy().tobytes())
        log.info("rank %d/%d final weights sha1 %s", self.rank, self.world, digest.hexdigest())
        self.td.barrier()
        self.td.destroy_process_group()
