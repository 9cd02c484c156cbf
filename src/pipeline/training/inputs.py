"""What a training step is fed: the data loaders (this rank's shard of the stream, per-sample
transforms in the loader workers) and the frozen upstream stages (``upstream=``)."""
from __future__ import annotations

import signal

import numpy as np
import torch
from omegaconf import DictConfig

from stages import Stage

from ..data import StreamSampler
from .config import TrainingError, _instantiate


def load_upstream(path, **options):
    """An upstream folder -> a frozen Pipeline (a single stage folder fills its own slot);
    ``options`` (e.g. ``backend``) override the saved ones."""
    from ..pipeline import SLOT_STAGE, Pipeline, resolve_checkpoint
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


def _to(batch: dict, device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if channels_last and v.ndim == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


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
