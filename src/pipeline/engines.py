"""What runs each stage's network: the backend and precision of a Pipeline, per slot, prepared
once per machine and remembered on disk. ``install`` is what ``Pipeline`` calls before a stage runs.

- ``backend``: ``torch``; ``openvino`` (each network exported to ONNX on first use and run by
  OpenVINO on the CPU, bf16 when ``precision`` resolves to bf16, else fp32); ``onnx`` (the same
  through ONNX Runtime, fp32); ``auto`` (on the CPU the first of openvino, onnx installed, else
  torch; torch on a GPU).
- ``precision``: ``fp32`` (exact), ``bf16``, ``fp16`` (CUDA) or ``auto``, or a mapping per slot.
- ONNX export of a stage (1.4 s for the three demo networks) is cached by the stage's digest
  (class, the source of its network code, config and weights), and OpenVINO keeps its compiled models in the same cache
  (``CACHE_DIR``), so a new process restores its first image without exporting or compiling.
- ``precision="auto"`` on a bf16-capable CPU is *measured*: the network runs a few times in fp32
  and in bf16 on a 256×256 probe and the faster one wins (bf16 is ~1.5× faster with AMX, slower
  on some AVX512-BF16 CPUs without it). The choice is cached per CPU model, thread count,
  engine version and network, in ``precision.json``.

The cache folder is ``$RESTORE_PIPELINE_CACHE`` (``off`` disables it), else
``$XDG_CACHE_HOME/restore-pipeline`` (``~/.cache/restore-pipeline``). A cache that cannot be
read or written is skipped: everything still works, only slower to start.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import threading
import time
from pathlib import Path

import torch

from stages import Stage
from stages.registry import atomic_write_bytes

from .device import cpu_has_bf16, exact_fp32, resolve_precision

log = logging.getLogger("pipeline.engines")
PROBE = 256          # side of the timing input (the detector's and colorizer's work sizes are ≤ 256)
PROBE_RUNS = 5       # timed runs per precision (after one warm-up): a median, ~0.1–0.3 s per network
BACKENDS = ("torch", "openvino", "onnx", "auto")
NEEDS = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}  # backend -> modules
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=None)
def installed(backend: str) -> bool:
    """Whether the modules ``backend`` needs are importable (asked on every call: looked up once)."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in NEEDS[backend])


def check_backend(backend: str) -> str:
    """``backend`` if known and installed, else one clear error."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'torch', 'openvino', 'onnx' or 'auto', got {backend!r}")
    if backend in NEEDS and not installed(backend):
        raise RuntimeError(f"backend={backend!r} needs {' and '.join(NEEDS[backend])}: "
                           f"pip install {' '.join(NEEDS[backend])}")
    return backend


def may_skip_torch(backend: str, device: torch.device) -> bool:
    """Whether a stage loaded for ``backend`` on ``device`` may leave its torch network unbuilt
    until used: an inference engine runs it from the cache (ONNX + compiled model), so a warm
    start imports no segmentation-models-pytorch and builds no network (~1.5 s of a CLI start)."""
    return (device.type == "cpu" and backend in BACKENDS and backend_on(backend, device) != "torch"
            and _usable(cache_dir()) is not None)


def check_precision(value, slots: tuple) -> str | dict:
    """A precision or a ``{slot: precision}`` mapping, validated (a copy for a mapping)."""
    if isinstance(value, dict) and set(value) - set(slots):
        raise ValueError(f"precision: unknown slot(s) {sorted(set(value) - set(slots))} (slots: {', '.join(slots)})")
    for v in (value.values() if isinstance(value, dict) else [value]):
        if str(v).lower() not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or a mapping per slot), got {v!r}")
    return dict(value) if isinstance(value, dict) else value


def backend_on(backend: str, device: torch.device) -> str:
    """``torch``, ``onnx`` or ``openvino``: what ``backend`` means on ``device``."""
    if backend == "auto":
        return "torch" if device.type != "cpu" else next((b for b in ("openvino", "onnx") if installed(b)), "torch")
    if backend != "torch" and device.type != "cpu":
        raise RuntimeError(f"backend={backend!r} runs on the CPU, not {device}")
    return backend


def choose(stage: Stage | None, slot: str | None, backend: str, precision, device: torch.device) -> tuple:
    """``(engine, precision)`` for ``stage`` in ``slot``: engine ``openvino``, ``onnxruntime`` or
    None (torch), e.g. ``("openvino", "bf16")``."""
    backend = backend_on(backend, device)
    if backend == "onnx":  # ONNX Runtime runs fp32 only
        return "onnxruntime", "fp32"
    want = str(precision.get(slot, "auto") if isinstance(precision, dict) else precision).lower()
    if want == "auto" and stage is not None and device.type == "cpu" and cpu_has_bf16():
        p = _memo(stage, ("auto", backend), lambda: fastest_precision(
            stage, "openvino" if backend == "openvino" else None, onnx_of(stage) if backend == "openvino" else None))
    else:
        p = resolve_precision(want, device)
    if backend == "openvino":  # OpenVINO silently runs fp32 where the CPU lacks bf16: say so
        return "openvino", p if cpu_has_bf16() else "fp32"
    return None, p


_INSTALLING = threading.Lock()  # threads restoring batches at once export and compile a network once


def install(stage: Stage, slot: str, backend: str, precision, device: torch.device) -> Stage:
    """``stage``, set to run its network as ``choose`` says (exported and compiled on first use)."""
    with _INSTALLING:
        return _install(stage, slot, backend, precision, device)


def _install(stage: Stage, slot: str, backend: str, precision, device: torch.device) -> Stage:
    engine, p = choose(stage, slot, backend, precision, device)
    if p == "fp32":
        exact_fp32(device)
    label = f"{engine}-{p}" if engine else (None if p == "fp32" else f"torch-{p}")
    if stage.runtime != label:
        stage.use_runtime(onnx_of(stage) if engine else None, engine or "onnxruntime", p, cache_dir=openvino_cache())
    return stage


def _memo(stage: Stage, key, make):
    """A value computed once per stage object (its ONNX export, its measured precision)."""
    memo = stage.__dict__.setdefault("_engine_memo", {})
    if key not in memo:
        memo[key] = make()
    return memo[key]


def onnx_of(stage: Stage):
    """The stage's ONNX model (a cached file or bytes), exported once per stage object."""
    return _memo(stage, "onnx", lambda: onnx_model(stage, stage_digest(stage)))


def cache_dir() -> Path | None:
    """The cache folder, or None when disabled (``RESTORE_PIPELINE_CACHE=off``)."""
    env = os.environ.get("RESTORE_PIPELINE_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "restore-pipeline"


def _usable(d: Path | None) -> Path | None:
    if d is None:
        return None
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d if os.access(d, os.W_OK) else None
    except OSError:
        return None


@functools.lru_cache(maxsize=None)
def _code_digest(cls: type) -> str:
    """sha256 of the source of the modules a stage's ``forward`` runs: its own and ``stages.nets``
    (a changed network must never run a stale export)."""
    import sys
    from stages import nets
    h = hashlib.sha256()
    for mod in (sys.modules[cls.__module__], nets):
        with contextlib.suppress(OSError, TypeError):
            h.update(inspect.getsource(mod).encode())
    return h.hexdigest()


def stage_digest(stage: Stage) -> str:
    """sha256 (hex, 16 chars) of the stage's class, the code of its network, its config and weights."""
    h = hashlib.sha256(f"{type(stage).__name__}|{_code_digest(type(stage))}|{sorted(stage.config.items())!r}|"
                       f"{torch.__version__}".encode())
    tensors = stage.tensors()
    for k in sorted(tensors):  # by name: a deferred network's tensors come in another order
        v = tensors[k]
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_model(stage: Stage, digest: str) -> bytes | Path:
    """The stage's network as ONNX: a cached file's path, or freshly exported bytes (then cached)."""
    d = _usable(cache_dir())
    f = d / "onnx" / f"{type(stage).__name__.lower()}-{digest}.onnx" if d else None
    if f is not None and f.is_file():
        return f
    data = stage.export_onnx()
    if f is not None:
        try:
            f.parent.mkdir(exist_ok=True)
            atomic_write_bytes(f, data)
            return f
        except OSError as e:
            log.debug("ONNX cache not written (%s)", e)
    return data


def openvino_cache() -> str | None:
    """OpenVINO's compiled-model cache folder (``CACHE_DIR``), or None."""
    d = _usable(cache_dir())
    return str(d / "openvino") if d else None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo (+ the bf16/AMX flags), or the platform's processor."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        import platform
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "cpu")
    flags = [f for f in ("amx_bf16", "avx512_bf16") if f in info]
    return f"{name} [{' '.join(flags)}]"


def _median_ms(fn, x, runs: int = PROBE_RUNS) -> float:
    fn(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2]


def _timers(stage: Stage, engine: str | None, model) -> dict:
    """``{precision: callable(x)}`` running the network as ``engine`` would."""
    from .device import autocast
    if engine is None:
        def torch_run(precision):
            def run(x):
                with torch.inference_mode(), autocast(torch.device("cpu"), precision):
                    stage.net(x)
            return run
        return {p: torch_run(p) for p in ("fp32", "bf16")}
    from stages.runtimes import OpenVINORuntime
    rts = {p: OpenVINORuntime(model, p, torch.get_num_threads(), openvino_cache()) for p in ("fp32", "bf16")}
    return {p: (lambda x, rt=rt: rt(x.numpy())) for p, rt in rts.items()}


def _read_choices(f: Path | None) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(f.read_text()) if f is not None and f.is_file() else {}
    return {}


def fastest_precision(stage: Stage, engine: str | None, model=None, digest: str | None = None) -> str:
    """``fp32`` or ``bf16``, whichever runs ``stage``'s network faster here through ``engine``
    (``openvino`` or None for torch); measured once, then read from ``precision.json``."""
    digest = digest or stage_digest(stage)
    if engine == "openvino":
        import openvino
        version = openvino.__version__
    else:
        version = torch.__version__
    key = f"{cpu_model()}|{torch.get_num_threads()} threads|{engine or 'torch'} {version}|{digest}"
    d = _usable(cache_dir())
    f = d / "precision.json" if d else None
    known = _read_choices(f)
    if key in known:
        return known[key]["choice"]
    x = torch.rand(1, stage.net_in_channels, PROBE, PROBE)
    ms = {p: _median_ms(fn, x) for p, fn in _timers(stage, engine, model).items()}
    choice = "bf16" if ms["bf16"] < ms["fp32"] else "fp32"
    log.info("precision auto for %s on %s: fp32 %.1f ms, bf16 %.1f ms -> %s", type(stage).__name__,
             cpu_model(), ms["fp32"], ms["bf16"], choice)
    if f is not None:
        known = _read_choices(f)  # another process may have written meanwhile
        known[key] = {"choice": choice, "ms": {p: round(v, 2) for p, v in ms.items()}}
        with contextlib.suppress(OSError):
            atomic_write_bytes(f, json.dumps(known, indent=1, sort_keys=True).encode())
    return choice
