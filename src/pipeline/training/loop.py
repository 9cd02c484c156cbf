"""The training loop: ``Trainer`` builds a run from its config and steps it to ``max_steps``."""
from __future__ import annotations

import logging
import math
import signal
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from stages import STAGES, Stage
from stages.checkpoint import atomic_write_bytes

from ..device import autocast, configure_training, resolve_precision, select_device
from .config import TrainingError, _instantiate, seed_everything
from .distributed import Distributed
from .inputs import _build_loaders, _stop_workers, _to, apply_upstream, load_upstream
from .state import MetricLog, _init_from, _load_state, _save_state, save_grid

log = logging.getLogger("pipeline.train")


def _lr_lambda(cfg):
    warm, floor = int(cfg.warmup_steps), float(cfg.min_lr_ratio)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        total = max(1, int(cfg.max_steps))  # read each step: trainer.max_minutes may move it
        p = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    return f


def make_optimizer(stage: Stage, tc: DictConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; fused (one kernel for all tensors) on CUDA."""
    return torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=float(tc.lr),
                             weight_decay=float(tc.weight_decay), fused=device.type == "cuda")


def _due(step: int, every, last: int) -> bool:
    return step == last or (bool(every) and step % int(every) == 0)


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
                return self._non_finite(float(loss.detach()), checked), stop
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


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
