"""Train one stage: ``python -m pipeline.train stage=<mask|inpaint|colorize> [key=value ...]``.

Writes to ``out_dir``: the stage checkpoint (config.yaml + model.safetensors, loadable with
``Stage.load(out_dir)``), ``train_config.yaml`` (the resolved Hydra config), ``metrics.csv``
(step, tag, value), ``samples/step_XXXXXXX.png`` grids (input | target | prediction), TensorBoard
events when available, and ``last/`` (weights + optimizer/scheduler/RNG state for ``resume=true``).
"""
from __future__ import annotations

import csv
import logging
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from stages import STAGES, Stage
from stages.base import atomic_write_bytes

from .data import StreamSampler
from .device import autocast, resolve_precision, select_device

log = logging.getLogger("pipeline.train")
CONF_DIR = str((Path(__file__).parent / "conf").resolve())  # repo: a link to conf/; wheel: a copy


class TrainingError(RuntimeError):
    """A user-facing training failure, reported as one line."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C / SIGTERM reach the whole process group; the main process saves a checkpoint and
    # stops the workers itself, so they must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _lr_lambda(cfg):
    warm, total, floor = int(cfg.warmup_steps), max(1, int(cfg.max_steps)), float(cfg.min_lr_ratio)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        p = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    return f


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

    from .io import save_png
    rows = []
    for i in range(min(max_rows, panels[0].shape[0])):
        rows.append(torch.cat([p[i].float().cpu().clamp(0, 1) for p in panels], 2))
    grid = torch.cat(rows, 1).permute(1, 2, 0).numpy()
    save_png(Image.fromarray((grid * 255).round().astype(np.uint8)), path)


def load_upstream(path):
    """An upstream folder -> a Pipeline (a single stage folder fills one slot)."""
    from .pipeline import Pipeline, resolve_checkpoint
    if path is None:
        return None
    p = resolve_checkpoint(str(path))
    if (p / "pipeline.yaml").is_file():
        pipe = Pipeline.load(p)
    else:
        st = Stage.load(p)
        slot = {"mask": "mask", "inpaint": "inpaint", "colorize": "colorize"}.get(st.name)
        if slot is None:
            raise TrainingError(f"upstream={path}: a {st.name!r} stage cannot feed this stage")
        pipe = Pipeline(**{slot: st})
    for s in pipe.stages.values():
        s.freeze()
    return pipe


@torch.no_grad()
def apply_upstream(batch: dict, upstream, stage_name: str) -> dict:
    """Replace ground-truth-derived inputs by what frozen upstream stages produce."""
    if upstream is None or stage_name == "mask":
        return batch
    batch = dict(batch)
    if upstream.mask is not None:
        m = upstream.mask.predict(batch["gray"]).float()
        batch["mask"] = m
    if stage_name == "colorize" and upstream.inpaint is not None:
        batch["restored_gray"] = upstream.inpaint.predict(batch["gray"], batch["mask"])
    return batch


def _to(batch: dict, device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if channels_last and v.ndim == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


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


def run(cfg: DictConfig) -> Path:
    """Train the configured stage; returns ``out_dir``."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    tc = cfg.trainer
    if tc.get("threads"):
        torch.set_num_threads(int(tc.threads))
    seed_everything(int(cfg.seed))
    device = select_device(str(tc.device))
    dist = Distributed(str(tc.get("strategy", "single")), device)
    device = dist.device
    precision = resolve_precision(str(tc.precision), device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.stage not in STAGES:
        raise TrainingError(f"stage={cfg.stage}: unknown (choose from {', '.join(sorted(STAGES))})")

    data = _instantiate(cfg.data, "data")
    stage: Stage = _instantiate(cfg.model, "model")
    if not isinstance(stage, STAGES[cfg.stage]):
        raise TrainingError(f"model._target_ builds a {type(stage).__name__}, stage={cfg.stage} "
                            f"needs a {STAGES[cfg.stage].__name__}")
    if cfg.get("init_from"):
        _init_from(stage, cfg.init_from)
    stage.to(device)
    if tc.channels_last:
        stage.to(memory_format=torch.channels_last)
    upstream = load_upstream(cfg.get("upstream"))
    if upstream is not None:
        upstream.to(device)

    torch.manual_seed(int(cfg.seed) + dist.rank)
    gen = torch.Generator().manual_seed(int(cfg.seed) + dist.rank)
    nw = int(tc.num_workers)
    if len(data.train) == 0:
        raise TrainingError(f"data: the training set is empty ({cfg.data.get('root', 'no root')})")
    sampler = StreamSampler(len(data.train), int(cfg.seed), dist.rank, dist.world)
    train_loader = DataLoader(data.train, batch_size=int(tc.batch_size), sampler=sampler,
                              num_workers=nw, generator=gen, persistent_workers=nw > 0,
                              worker_init_fn=_worker_init if nw > 0 else None,
                              pin_memory=device.type == "cuda")
    val_loader = DataLoader(data.val, batch_size=int(tc.batch_size), shuffle=False, num_workers=0)

    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=float(tc.lr),
                            weight_decay=float(tc.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tc))
    step, batches = _load_state(out, stage, opt, sched) if cfg.resume else (0, 0)
    if cfg.resume and step == 0:
        log.info("resume=true but %s/last holds no state: starting from step 0", out)
    if step == 0:
        stage.prepare(train_loader, int(tc.prepare_batches))
    dist.broadcast_from_rank0(stage)  # identical weights and buffers (e.g. the ab prior) everywhere
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    main = dist.rank == 0
    if main:
        atomic_write_bytes(out / "train_config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
    mlog = MetricLog(out, bool(tc.tensorboard), step) if main else None

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if hasattr(signal, "SIGTERM") and _main_thread() else {}

    def validate(step: int) -> dict:
        stage.eval()
        sums, n = {}, 0
        first = None
        for i, batch in enumerate(val_loader):
            if i >= int(tc.val_batches):
                break
            batch = apply_upstream(_to(batch, device, False), upstream, stage.name)
            with autocast(device, precision):
                m = stage.metrics(batch)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
            first = first if first is not None else batch
        res = {f"val/{k}": v / max(1, n) for k, v in sums.items()}
        if first is not None:  # still in eval mode: the grid must not touch norm statistics
            with autocast(device, precision):
                save_grid(stage.visualize(first), out / "samples" / f"step_{step:07d}.png")
        stage.train()
        return res

    stage.train()
    sampler.start = batches * int(tc.batch_size)  # a resumed run continues the same data stream
    it = iter(train_loader)
    bar = tqdm(total=int(tc.max_steps), initial=step, disable=not (tc.progress and main), dynamic_ncols=True,
               desc=f"train {stage.name}", file=sys.stderr)
    t0, start_step, running = time.time(), step, None
    try:
        while step < int(tc.max_steps):
            batch = apply_upstream(_to(next(it), device, bool(tc.channels_last)), upstream, stage.name)
            batches += 1
            with autocast(device, precision):
                losses = stage.loss(batch)
            loss = losses["loss"]
            finite, stopping = dist.agree(bool(torch.isfinite(loss)), stop["signal"] is not None)
            if stopping and stop["signal"] is None:
                stop["signal"] = signal.SIGTERM  # another rank was signalled
            if not finite:
                if tc.nonfinite == "skip":
                    log.warning("step %d: non-finite loss %s, batch skipped", step, float(loss))
                    opt.zero_grad(set_to_none=True)
                    continue
                if main:
                    _save_state(out, stage, opt, sched, step, cfg, batches)
                raise TrainingError(f"step {step}: loss is {float(loss)} (non-finite); last good state "
                                    f"saved in {out}/last; lower trainer.lr or set trainer.nonfinite=skip")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            dist.average_gradients(stage)
            if tc.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(stage.parameters(), float(tc.grad_clip))
            scaler.step(opt)
            scaler.update()
            sched.step()
            dist.broadcast_buffers(stage)
            step += 1
            lv = float(loss.detach())
            running = lv if running is None else 0.9 * running + 0.1 * lv
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if main and (step % int(tc.log_every) == 0 or step == int(tc.max_steps)):
                mlog.log(step, {f"train/{k}": float(v.detach()) for k, v in losses.items()}
                         | {"train/lr": sched.get_last_lr()[0],
                            "train/samples_per_s": (step - start_step) * int(tc.batch_size) * dist.world
                                                    / max(1e-9, time.time() - t0)})
            if main and (step % int(tc.val_every) == 0 or step == int(tc.max_steps)):
                res = validate(step)
                mlog.log(step, res)
                bar.write(f"step {step}: " + " ".join(f"{k[4:]}={v:.4f}" for k, v in res.items()))
            if main and step % int(tc.ckpt_every) == 0 and step < int(tc.max_steps):
                _save_state(out, stage, opt, sched, step, cfg, batches)
            if stop["signal"] is not None:
                if main:
                    _save_state(out, stage, opt, sched, step, cfg, batches)
                    stage.save(out)
                bar.close()
                log.warning("stopped by signal %d at step %d; state saved, continue with resume=true",
                            stop["signal"], step)
                raise SystemExit(128 + int(stop["signal"]))
    finally:
        bar.close()
        if mlog is not None:
            mlog.close()
        for s, h in old.items():
            signal.signal(s, h)
    if main:
        _save_state(out, stage, opt, sched, step, cfg, batches)
        stage.save(out)
        log.info("saved %s stage to %s (%d steps)", stage.name, out, step)
    dist.finish(stage)
    return out


class Distributed:
    """``trainer.strategy=ddp`` under ``torchrun``: data-parallel training with gradient averaging.

    Weights and buffers are broadcast from rank 0 once, every rank sees its own shard of the data
    (``StreamSampler`` with rank/world, as DistributedSampler shards) and gradients are averaged with all-reduce after each backward, which
    is what DistributedDataParallel computes (without wrapping the stage, so ``Stage.loss`` keeps
    calling the module itself). Only rank 0 validates, logs and writes checkpoints.
    ``strategy=single`` makes every method a no-op.
    """

    def __init__(self, strategy: str, device: torch.device):
        if strategy not in ("single", "ddp"):
            raise TrainingError(f"trainer.strategy={strategy}: unknown (single, ddp)")
        self.on = strategy == "ddp"
        self.rank, self.world, self.device = 0, 1, device
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

    def broadcast_from_rank0(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if self.on:
            for t in list(module.parameters()) + list(module.buffers()):
                self.td.broadcast(t.data, 0)

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Norm-layer running statistics follow rank 0, as DistributedDataParallel does."""
        if self.on:
            for b in module.buffers():
                self.td.broadcast(b.data, 0)

    def agree(self, finite: bool, stopping: bool) -> tuple[bool, bool]:
        """All ranks take the same branch: finite only if finite everywhere, stop if any stops."""
        if not self.on:
            return finite, stopping
        flags = torch.tensor([0.0 if finite else 1.0, 1.0 if stopping else 0.0], device=self.device)
        self.td.all_reduce(flags, op=self.td.ReduceOp.MAX)
        return flags[0].item() == 0, flags[1].item() > 0

    def average_gradients(self, module: torch.nn.Module) -> None:
        """All-reduce and average every gradient (what DDP does after backward)."""
        if not self.on:
            return
        for p in module.parameters():
            if p.grad is not None:
                self.td.all_reduce(p.grad)
                p.grad.div_(self.world)

    def finish(self, module: torch.nn.Module) -> None:
        """Log each rank's final weight digest (they must agree) and leave the process group."""
        if not self.on:
            return
        import hashlib
        digest = hashlib.sha1()
        for k, v in sorted(module.state_dict().items()):
            digest.update(v.detach().float().cpu().numpy().tobytes())
        log.info("rank %d/%d final weights sha1 %s", self.rank, self.world, digest.hexdigest())
        self.td.barrier()
        self.td.destroy_process_group()


def _instantiate(node, what: str):
    """``hydra.utils.instantiate`` with the underlying error as one TrainingError line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise TrainingError(f"{what}: {msg}") from None


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def main() -> None:
    """``python -m pipeline.train`` (Hydra): train the stage selected with ``stage=``."""
    import hydra

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
    def _app(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except (TrainingError, FileNotFoundError, ValueError, RuntimeError) as e:
            from stages import CheckpointError  # noqa: F401  (a ValueError subclass)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _app()


if __name__ == "__main__":
    main()
