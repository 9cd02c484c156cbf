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
from stages.checkpoint import atomic_write_bytes

from .data import StreamSampler
from .device import autocast, configure_training, resolve_precision, select_device

log = logging.getLogger("pipeline.train")
CONF_DIR = str((Path(__file__).parent / "conf").resolve())  # repo: a link to conf/; wheel: a copy


def register_stage_schemas() -> None:
    """Hydra's ``schema/<stage>`` configs: every constructor argument of each registered stage
    with its default, read from the signature (the one home of a default). conf/stage/<stage>.yaml
    puts it under ``model`` and holds overrides only; ``model.KEY=VALUE`` works for every key."""
    from hydra.core.config_store import ConfigStore
    cs = ConfigStore.instance()
    for name, cls in STAGES.items():
        cs.store(group="schema", name=name, node={"_target_": f"{cls.__module__}.{cls.__qualname__}", **cls.defaults()})


register_stage_schemas()


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
    import cv2
    cv2.setNumThreads(1)  # 8-14 workers, each with a pool of every core's threads, oversubscribe the machine


def _stop_workers(it) -> None:
    """Stop a training loader's persistent workers now (torch's own shutdown of its iterator).
    They ignore SIGTERM (``_worker_init``), so left to the interpreter's exit, which terminates
    its children with SIGTERM and then waits for them, they would keep a finished run alive."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _lr_lambda(cfg):
    warm, floor = int(cfg.warmup_steps), float(cfg.min_lr_ratio)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        total = max(1, int(cfg.max_steps))  # read each step: trainer.max_minutes may move it
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


def load_upstream(path, **options):
    """An upstream folder -> a frozen Pipeline (a single stage folder fills its own slot);
    ``options`` (e.g. ``backend``) override the saved ones."""
    from .pipeline import SLOT_STAGE, Pipeline, resolve_checkpoint
    if path is None:
        return None
    p = resolve_checkpoint(str(path))
    if (p / "pipeline.yaml").is_file():
        pipe = Pipeline.load(p, **options)
    else:
        st = Stage.load(p)
        if st.name not in SLOT_STAGE:
            raise TrainingError(f"upstream={path}: a {st.name!r} stage cannot feed this stage")
        pipe = Pipeline(**{st.name: st}, **options)
    for s in pipe.stages.values():
        s.freeze()
    return pipe


@torch.no_grad()
def apply_upstream(batch: dict, upstream, stage_name: str) -> dict:
    """Replace ground-truth-derived inputs by what frozen upstream stages produce, through the
    path users run (``Pipeline.detect`` and ``Pipeline.fill``: the stages' own inference)."""
    if upstream is None or stage_name == "mask":
        return batch
    batch = dict(batch)
    gray = batch["gray"]
    g8 = list((gray[:, 0].float().cpu().numpy() * 255).round().astype(np.uint8))
    if upstream.mask is not None:
        masks = upstream.detect(g8)
    else:
        masks = list(batch["mask"][:, 0].cpu().numpy() > 0.5)
    batch["mask"] = torch.from_numpy(np.stack(masks)[:, None]).to(gray.device, gray.dtype)
    if stage_name == "colorize" and upstream.inpaint is not None:
        filled = np.stack([upstream.fill(g, m) for g, m in zip(g8, masks)])[:, None]
        batch["restored_gray"] = torch.from_numpy(filled).to(gray.device, gray.dtype) / 255
    return batch


class UpstreamSample:
    """``apply_upstream`` for one training sample, run in the loader workers (not in the main
    process between steps): each worker loads the frozen upstream once, on the CPU, one thread,
    in torch (an inference engine's threads do not survive the fork that starts a worker)."""

    def __init__(self, path, stage_name: str):
        self.path, self.stage_name, self.pipe = str(path), stage_name, None

    def __call__(self, item: dict) -> dict:
        if self.pipe is None:
            if torch.utils.data.get_worker_info() is not None:
                torch.set_num_threads(1)  # many workers: one core each
            self.pipe = load_upstream(self.path, backend="torch")
        batch = apply_upstream({k: v[None] for k, v in item.items()}, self.pipe, self.stage_name)
        return {k: v[0] for k, v in batch.items()}

    def __getstate__(self) -> dict:  # a worker loads its own copy
        return {**self.__dict__, "pipe": None}


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


def _build_stage(cfg: DictConfig, device: torch.device) -> Stage:
    """The configured stage (``model.*``, ``init_from``) on ``device``."""
    if cfg.stage not in STAGES:
        raise TrainingError(f"stage={cfg.stage}: unknown (choose from {', '.join(sorted(STAGES))})")
    stage: Stage = _instantiate(cfg.model, "model")
    if not isinstance(stage, STAGES[cfg.stage]):
        raise TrainingError(f"model._target_ builds a {type(stage).__name__}, stage={cfg.stage} "
                            f"needs a {STAGES[cfg.stage].__name__}")
    if cfg.init_from:
        _init_from(stage, cfg.init_from)
    stage.to(device)
    if cfg.trainer.channels_last:
        stage.to(memory_format=torch.channels_last)
    return stage


class _then:
    """``second(first(item))`` (``second`` None: ``first`` alone); picklable for spawned workers."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __call__(self, item: dict) -> dict:
        item = self.first(item)
        return item if self.second is None else self.second(item)


class _Transformed(torch.utils.data.Dataset):
    """``dataset`` with ``fn`` applied to each item (in the loader's worker processes)."""

    def __init__(self, dataset, fn):
        self.dataset, self.fn = dataset, fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        return self.fn(self.dataset[key])


def _build_loaders(cfg: DictConfig, dist: "Distributed", device: torch.device, stage: Stage, upstream):
    """``(train_loader, val_loader, sampler)``: the training stream is this rank's shard. The
    frozen ``upstream`` stages and then the stage's ``sample_transform`` (e.g. the inpainter's
    Telea prefill) run in the loader workers, per sample, beside the training steps."""
    from torch.utils.data import DataLoader
    tc = cfg.trainer
    data = _instantiate(cfg.data, "data")
    if len(data.train) == 0:
        raise TrainingError(f"data: the training set is empty ({cfg.data.get('root', 'no root')})")
    fn = getattr(stage, "sample_transform", lambda: None)()
    if upstream is not None and stage.name != "mask":
        fn = _then(UpstreamSample(cfg.upstream, stage.name), fn)
    train_set = data.train if fn is None else _Transformed(data.train, fn)
    gen = torch.Generator().manual_seed(int(cfg.seed) + dist.rank)
    nw = int(tc.num_workers)
    sampler = StreamSampler(len(data.train), int(cfg.seed), dist.rank, dist.world)
    train_loader = DataLoader(train_set, batch_size=int(tc.batch_size), sampler=sampler,
                              num_workers=nw, generator=gen, persistent_workers=nw > 0,
                              worker_init_fn=_worker_init if nw > 0 else None,
                              pin_memory=device.type == "cuda")
    val_loader = DataLoader(data.val, batch_size=int(tc.batch_size), shuffle=False, num_workers=0)
    return train_loader, val_loader, sampler


def make_optimizer(stage: Stage, tc: DictConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; fused (one kernel for all tensors) on CUDA."""
    return torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=float(tc.lr),
                             weight_decay=float(tc.weight_decay), fused=device.type == "cuda")


def _due(step: int, every, last: int) -> bool:
    return step == last or (bool(every) and step % int(every) == 0)


class Trainer:
    """One training run, in the order a reader follows it: ``__init__`` builds (device,
    process group, stage, data, optimizer, resume state, the DDP-wrapped loss module),
    ``step`` is one optimisation step, ``validate`` scores the validation batches on rank 0,
    ``checkpoint`` writes ``last/`` and ``fit`` loops until ``max_steps`` or a signal.

    The host reads device values (the loss, its finiteness, the stop flag agreed over ranks)
    only every ``trainer.sync_every`` steps (null: every step on the CPU, where it costs
    nothing; every ``log_every`` steps on a GPU) and before every log, validation and checkpoint,
    so a GPU is never stalled by a per-step ``float(loss)``.
    """

    def __init__(self, cfg: DictConfig):
        tc = self.tc = cfg.trainer
        self.cfg, self.out = cfg, Path(cfg.out_dir)
        if tc.threads:
            torch.set_num_threads(int(tc.threads))
        seed_everything(int(cfg.seed))
        self.dist = Distributed(str(tc.strategy), select_device(str(tc.device)))
        self.device = device = self.dist.device
        if tc.get("max_minutes") and self.dist.on:
            raise TrainingError("trainer.max_minutes needs trainer.strategy=single (ranks would stop at different steps)")
        configure_training(device)
        self.precision = resolve_precision(str(tc.precision), device)
        self.main = self.dist.rank == 0
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage = _build_stage(cfg, device)
        self.upstream = load_upstream(cfg.upstream)
        if self.upstream is not None:
            self.upstream.to(device)
        torch.manual_seed(int(cfg.seed) + self.dist.rank)
        self.train_loader, self.val_loader, self.sampler = _build_loaders(cfg, self.dist, device, self.stage,
                                                                          self.upstream)
        self.opt = make_optimizer(self.stage, tc, device)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(tc))
        self.step_no, self.batches = (_load_state(self.out, self.stage, self.opt, self.sched)
                                      if cfg.resume else (0, 0))
        self.dist.agree_on_resume(self.step_no, self.batches, self.out)
        if cfg.resume and self.step_no == 0:
            log.info("resume=true but %s/last holds no state: starting from step 0", self.out)
        if self.step_no == 0:
            self.stage.prepare(self.train_loader, int(tc.prepare_batches))
        probe = None
        if self.dist.on:  # a validation batch finds parameters the loss never reaches
            probe = apply_upstream(_to(next(iter(self.val_loader)), device, False), self.upstream, self.stage.name)
        self.model = self.dist.wrap(self.stage, probe, lambda: autocast(device, self.precision))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        skip = tc.nonfinite == "skip"
        auto = 1 if device.type == "cpu" else int(tc.log_every)
        self.sync_every = 1 if skip else int(tc.sync_every or auto)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss since the last check
        self.running = None
        self.saved_step = self.checked_step = self.step_no
        if self.main:
            atomic_write_bytes(self.out / "train_config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        self.mlog = MetricLog(self.out, bool(tc.tensorboard), self.step_no) if self.main else None

    def _check_due(self, step: int) -> bool:
        tc, last = self.tc, int(self.tc.max_steps)
        return any(_due(step, e, last) for e in (self.sync_every, tc.log_every, tc.val_every, tc.ckpt_every))

    def step(self, batch: dict, stop_requested: bool = False) -> tuple[dict | None, bool]:
        """One optimisation step on ``batch`` -> ``(losses, stop)``; losses None when the batch
        was skipped (non-finite loss, ``trainer.nonfinite=skip``)."""
        with autocast(self.device, self.precision):
            losses = self.model(batch)
        loss = losses["loss"]
        self.bad |= ~torch.isfinite(loss.detach())
        stop = stop_requested and self.dist.world == 1  # several ranks stop together, at a check
        if self._check_due(self.step_no + 1):  # a host sync: agree across ranks before touching weights
            finite, stop = self.dist.agree(not bool(self.bad), stop_requested)
            self.bad.zero_()
            checked, self.checked_step = self.checked_step, self.step_no + 1
            if not finite:
                return self._non_finite(float(loss), checked), stop
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # DDP: bucketed all-reduce overlapped with backward
        if self.tc.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.stage.parameters(), float(self.tc.grad_clip))
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step_no += 1
        lv = loss.detach().float()
        self.running = lv if self.running is None else 0.9 * self.running + 0.1 * lv
        return losses, stop

    def _non_finite(self, value: float, checked: int) -> None:
        step, out = self.step_no, self.out
        if self.tc.nonfinite == "skip":
            log.warning("step %d: non-finite loss %s, batch skipped", step, value)
            self.opt.zero_grad(set_to_none=True)
            return None
        if checked == step:  # caught before it touched the weights: they are the last good state
            self.checkpoint()
            raise TrainingError(f"step {step}: loss is {value} (non-finite); last good state saved in "
                                f"{out}/last; lower trainer.lr or set trainer.nonfinite=skip")
        raise TrainingError(f"steps {checked + 1}-{step + 1}: the loss became non-finite; the "
                            f"last good state is {out}/last (step {self.saved_step}); lower trainer.lr "
                            f"or set trainer.nonfinite=skip")

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean validation metrics over ``val_batches`` (rank 0) and a sample grid."""
        stage, dev, prec = self.stage, self.device, self.precision
        stage.eval()
        sums, n, first = {}, 0, None
        for i, batch in enumerate(self.val_loader):
            if i >= int(self.tc.val_batches):
                break
            batch = apply_upstream(_to(batch, dev, bool(self.tc.channels_last)), self.upstream, stage.name)
            with autocast(dev, prec):
                for k, v in stage.metrics(batch).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
            first = first if first is not None else batch
        if first is not None:  # still in eval mode: the grid must not touch norm statistics
            with autocast(dev, prec):
                save_grid(stage.visualize(first), self.out / "samples" / f"step_{self.step_no:07d}.png")
        stage.train()
        return {f"val/{k}": v / max(1, n) for k, v in sums.items()}

    def checkpoint(self, final: bool = False) -> None:
        """Rank 0: ``last/`` (resume state); ``final`` also writes the stage to ``out_dir``."""
        if self.main:
            _save_state(self.out, self.stage, self.opt, self.sched, self.step_no, self.cfg, self.batches)
            self.saved_step = self.step_no
            if final:
                self.stage.save(self.out)

    def _report(self, losses: dict, bar, t0: float, start: int) -> None:
        """Progress bar, metrics.csv and validation at the steps they are due (host reads)."""
        step, tc, last = self.step_no, self.tc, int(self.tc.max_steps)
        bar.update(1)
        if not self._check_due(step):
            return
        bar.set_postfix(loss=f"{float(self.running):.4f}")
        if self.main and _due(step, tc.log_every, last):
            rate = (step - start) * int(tc.batch_size) * self.dist.world / max(1e-9, time.time() - t0)
            self.mlog.log(step, {f"train/{k}": float(v.detach()) for k, v in losses.items()}
                          | {"train/lr": self.sched.get_last_lr()[0], "train/samples_per_s": rate})
        if self.main and _due(step, tc.val_every, last):
            res = self.validate()
            self.mlog.log(step, res)
            bar.write(f"step {step}: " + " ".join(f"{k[4:]}={v:.4f}" for k, v in res.items()))
        if step % int(tc.ckpt_every) == 0 and step < last:
            self.checkpoint()

    def fit(self) -> Path:
        """Train to ``max_steps``; Ctrl-C/SIGTERM save ``last/`` and exit with 128 + signal."""
        from tqdm.auto import tqdm
        tc, stop = self.tc, {"signal": None}

        def on_signal(signum, _frame):
            stop["signal"] = signum
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
            if hasattr(signal, "SIGTERM") and _main_thread() else {}
        self.stage.train()
        self.sampler.start = self.batches * int(tc.batch_size)  # a resumed run continues the same stream
        it = iter(self.train_loader)
        bar = tqdm(total=int(tc.max_steps), initial=self.step_no, disable=not (tc.progress and self.main),
                   dynamic_ncols=True, desc=f"train {self.stage.name}", file=sys.stderr)
        t0, start = time.time(), self.step_no
        try:
            while self.step_no < int(tc.max_steps):
                batch = _to(next(it), self.device, bool(tc.channels_last))  # upstream: applied in the workers
                self.batches += 1
                losses, stopping = self.step(batch, stop["signal"] is not None)
                if losses is not None:
                    self._report(losses, bar, t0, start)
                if tc.get("max_minutes"):
                    self._fit_budget(float(tc.max_minutes) * 60, t0, start, bar)
                if stopping:
                    self._stop(stop["signal"] or signal.SIGTERM)  # SIGTERM: another rank was signalled
        finally:
            _stop_workers(it)
            bar.close()
            if self.mlog is not None:
                self.mlog.close()
            for s, h in old.items():
                signal.signal(s, h)
        self.checkpoint(final=True)
        if self.main:
            log.info("saved %s stage to %s (%d steps)", self.stage.name, self.out, self.step_no)
        self.dist.finish(self.stage)
        return self.out

    def _fit_budget(self, seconds: float, t0: float, start: int, bar) -> None:
        """``trainer.max_minutes``: every 50 steps, set ``max_steps`` to what the rest of the time
        allows at the rate so far (the cosine schedule follows it), so a run on a lent machine
        anneals and saves inside its time; never more than the configured ``max_steps``."""
        done = self.step_no - start
        if done < 20 or done % 50:
            return
        if not hasattr(self, "_cap"):
            self._cap = int(self.tc.max_steps)
        elapsed = time.time() - t0
        fit = self.step_no + int(done / elapsed * max(0.0, seconds - elapsed))
        self.tc.max_steps = max(self.step_no, min(self._cap, fit))
        bar.total = int(self.tc.max_steps)

    def _stop(self, signum: int) -> None:
        self.checkpoint(final=True)
        log.warning("stopped by signal %d at step %d; state saved, continue with resume=true", signum, self.step_no)
        raise SystemExit(128 + int(signum))


def run(cfg: DictConfig) -> Path:
    """Train the configured stage; returns ``out_dir``."""
    return Trainer(cfg).fit()


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
