"""The ``Stage`` base class shared by the mask detector, the inpainter and the colorizer.

A stage is an ``nn.Module`` with a training ``loss(batch)``, validation ``metrics(batch)``, an
inference ``predict(...)``, ``freeze()``/``unfreeze()`` and a folder checkpoint format::

    stage_dir/config.yaml        {format: restore-stage/1, stage: <registry name>, config: {...}}
    stage_dir/model.safetensors  the state dict (fp32, or fp16 when saved with dtype=float16)

Checkpoints never name code: the ``stage`` key is looked up in ``STAGES``; nothing is unpickled.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import ClassVar

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

FORMAT = "restore-stage/1"
STAGES: dict[str, type["Stage"]] = {}


class CheckpointError(ValueError):
    """A checkpoint folder is missing, truncated, of another kind, or names an unknown stage."""


def register_stage(name: str):
    """Class decorator: make a Stage subclass loadable from checkpoints under ``name``."""
    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise TypeError(f"{cls!r} is not a Stage subclass")
        cls.name = name
        STAGES[name] = cls
        return cls
    return deco


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_stage_config(path: str | os.PathLike) -> dict:
    """Read and validate ``path/config.yaml``; returns ``{"stage": name, "config": {...}}``."""
    path = Path(path)
    cfg_file = path / "config.yaml"
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a stage checkpoint folder (no such directory)")
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: not a stage checkpoint (config.yaml is missing)")
    try:
        meta = yaml.safe_load(cfg_file.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfg_file}: unreadable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or "stage" not in meta or not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{cfg_file}: not a stage config (needs 'stage' and a 'config' mapping)")
    if any(k == "_target_" for k in _walk_keys(meta)):
        raise CheckpointError(f"{cfg_file}: refusing a checkpoint config that names code (_target_)")
    if meta["stage"] not in STAGES:
        raise CheckpointError(f"{cfg_file}: unknown stage {meta['stage']!r} "
                              f"(known: {', '.join(sorted(STAGES))})")
    return meta


def _walk_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_keys(v)


class Stage(nn.Module):
    """Base of every stage. Subclasses pass their hyperparameters to ``super().__init__``
    (they are what ``save`` writes to config.yaml) and implement ``forward``, ``loss``,
    ``metrics``, ``predict`` and ``visualize``.
    """

    name: ClassVar[str] = ""

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)
        self._frozen = False

    # ---------------------------------------------------------------- training interface
    def loss(self, batch: dict) -> dict:
        """Training losses for a batch (see ``pipeline.data``); must include ``"loss"``."""
        raise NotImplementedError

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        """Validation metrics (floats, higher or lower as named) for a batch."""
        raise NotImplementedError

    @torch.no_grad()
    def visualize(self, batch: dict) -> list:
        """Panels (input, target, prediction) for a sample grid: list of (B,3,H,W) floats in [0,1]."""
        raise NotImplementedError

    def prepare(self, loader, max_batches: int = 0) -> None:
        """Hook run once before training starts (e.g. to estimate data statistics)."""

    def predict(self, *args, **kwargs):
        """Inference on (B,C,H,W) inputs in [0,1] (see each stage); no gradients."""
        raise NotImplementedError

    # ---------------------------------------------------------------- freezing
    def freeze(self) -> "Stage":
        """No gradients, and eval mode (norm statistics fixed) even after a later ``.train()``."""
        self._frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def unfreeze(self) -> "Stage":
        """Trainable again; ``.train()`` works as usual."""
        self._frozen = False
        for p in self.parameters():
            p.requires_grad_(True)
        return self

    @property
    def frozen(self) -> bool:
        """True after ``freeze()`` until ``unfreeze()``."""
        return self._frozen

    def train(self, mode: bool = True) -> "Stage":
        """``nn.Module.train``, except that a frozen stage stays in eval mode."""
        return super().train(mode and not self._frozen)

    # ---------------------------------------------------------------- ONNX Runtime
    net_in_channels: ClassVar[int] = 1

    def run_net(self, x: torch.Tensor) -> torch.Tensor:
        """``self.net(x)``, or the inference engine installed by ``use_runtime`` (CPU)."""
        rt = self.__dict__.get("_runtime")
        if rt is None:
            return self.net(x)
        return torch.from_numpy(rt(x.detach().float().cpu().contiguous().numpy())).to(x.device)

    def export_onnx(self, path: str | os.PathLike | None = None) -> bytes:
        """The network (not the pre/post-processing around it) as ONNX bytes: input ``x``
        (B,C,H,W) float32 with H, W multiples of the stage's padding, output ``y``. Also written to
        ``path`` (atomically) when given."""
        import copy
        import io
        import warnings
        net = copy.deepcopy(self.net).float().eval().to("cpu")
        buf = io.BytesIO()
        dyn = {0: "batch", 2: "height", 3: "width"}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, torch.zeros(1, self.net_in_channels, 64, 64), buf, input_names=["x"],
                              output_names=["y"], opset_version=17, dynamo=False,
                              dynamic_axes={"x": dyn, "y": dyn})
        data = buf.getvalue()
        if path is not None:
            atomic_write_bytes(Path(path), data)
        return data

    def use_runtime(self, model: bytes | str | os.PathLike | None, engine: str = "onnxruntime",
                    precision: str = "fp32", threads: int | None = None, cache_dir: str | None = None) -> "Stage":
        """Run the network through an inference engine on the CPU, or through torch again with
        ``model=None``. ``model``: ONNX bytes from ``export_onnx`` or an ONNX file. ``engine``:
        ``onnxruntime`` (fp32) or ``openvino`` (``precision`` fp32, or bf16 on CPUs with
        AVX512-BF16/AMX; ``cache_dir``: OpenVINO's compiled-model cache). Inference only; the
        torch weights stay as they are."""
        if model is not None and engine not in _RUNTIMES:
            raise ValueError(f"unknown engine {engine!r} (engines: {', '.join(_RUNTIMES)})")
        self.__dict__.pop("_runtime", None)
        if model is not None:
            self.__dict__["_runtime"] = _RUNTIMES[engine](model, precision, threads or torch.get_num_threads(),
                                                          cache_dir)
        return self

    @property
    def runtime(self) -> str | None:
        """The engine running the network, e.g. ``"openvino-bf16"``, or None for torch."""
        rt = self.__dict__.get("_runtime")
        return None if rt is None else rt.label

    # ---------------------------------------------------------------- checkpoints
    @property
    def device(self) -> torch.device:
        """The device of the first parameter."""
        return next(self.parameters()).device

    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write ``path/config.yaml`` and ``path/model.safetensors`` (each atomically).

        ``dtype=torch.float16`` halves the file; floating tensors are restored to fp32 on load.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            state[k] = v.contiguous()
        from safetensors.torch import save as st_save
        atomic_write_bytes(path / "model.safetensors", st_save(state, metadata={"format": "pt"}))
        meta = {"format": FORMAT, "stage": self.name, "config": _plain(self.config)}
        atomic_write_bytes(path / "config.yaml", yaml.safe_dump(meta, sort_keys=False).encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Stage":
        """Rebuild a stage from a folder written by ``save``. The class comes from the registry
        (``config.yaml: stage``); ``MaskDetector.load`` refuses a folder holding another stage.
        """
        path = Path(path)
        meta = read_stage_config(path)
        klass = STAGES[meta["stage"]]
        if not issubclass(klass, cls):
            raise CheckpointError(f"{path}: holds a {klass.__name__} ({meta['stage']!r} stage), "
                                  f"not a {cls.__name__}")
        config = dict(meta.get("config") or {})
        config["encoder_weights"] = None  # the weights come from the checkpoint, never a download
        try:
            stage = klass(**config)
        except TypeError as e:
            raise CheckpointError(f"{path}/config.yaml: invalid {klass.__name__} config ({e})") from None
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{path}: model.safetensors is missing")
        try:
            state = load_file(str(weights), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{weights}: unreadable or truncated safetensors file ({e})") from None
        own = stage.state_dict()
        state = {k: (v.to(own[k].dtype) if k in own and v.is_floating_point() else v)
                 for k, v in state.items()}
        missing, unexpected = set(own) - set(state), set(state) - set(own)
        if missing or unexpected:
            raise CheckpointError(f"{weights}: weights do not match the config "
                                  f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
        bad = [k for k in own if own[k].shape != state[k].shape]
        if bad:
            raise CheckpointError(f"{weights}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                                  f"the config expects {tuple(own[bad[0]].shape)}")
        stage.load_state_dict(state)
        return stage.to(map_location).eval()


def _plain(obj):
    """Config values as plain YAML types (tuples -> lists, OmegaConf nodes -> containers)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
        if isinstance(obj, (DictConfig, ListConfig)):
            obj = OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ------------------------------------------------------------------------- shared helpers
def build_unet(in_channels: int, classes: int, arch: str = "Unet", encoder_name: str = "resnet18",
               encoder_depth: int = 5, decoder_channels=(256, 128, 64, 32, 16),
               encoder_weights: str | None = None) -> nn.Module:
    """An segmentation-models-pytorch network. ``encoder_weights`` other than None downloads
    pretrained weights; offline that fails with one clear ``RuntimeError`` line.
    """
    import segmentation_models_pytorch as smp

    decoder_channels = list(decoder_channels)
    if len(decoder_channels) != encoder_depth:
        raise ValueError(f"decoder_channels needs {encoder_depth} entries (encoder_depth), "
                         f"got {len(decoder_channels)}")
    kwargs = dict(encoder_name=encoder_name, encoder_depth=encoder_depth, in_channels=in_channels,
                  classes=classes, encoder_weights=None)
    if arch.lower() in ("unet", "unetplusplus"):
        kwargs["decoder_channels"] = decoder_channels
    if not encoder_weights:
        return smp.create_model(arch, **kwargs)
    import logging
    import socket
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # one line from us, not retries
    try:
        socket.getaddrinfo("huggingface.co", 443)  # fail fast offline instead of retrying for ~30 s
        return smp.create_model(arch, **{**kwargs, "encoder_weights": encoder_weights})
    except Exception as e:  # network errors come in many types (URLError, HF hub, OSError ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"cannot fetch {encoder_weights!r} weights for encoder {encoder_name!r} "
                           f"(offline? use model.encoder_weights=null): {msg}") from None


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad (B,C,H,W) at the bottom/right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def shrink(x: torch.Tensor, work_size: int | None) -> torch.Tensor:
    """Area-downscale (B,C,H,W) so its longer side is at most ``work_size`` (None: unchanged)."""
    h, w = x.shape[-2:]
    if not work_size or max(h, w) <= work_size:
        return x
    s = work_size / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    k = h // size[0]
    if size[0] * k == h and size[1] * k == w:  # an integer factor: the same average, ~2x faster
        return torch.nn.functional.avg_pool2d(x, k)
    return torch.nn.functional.interpolate(x, size=size, mode="area")


TTA_SIZES = (1, 2, 4, 8)


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """One of the 8 flips/transposes of (..., H, W) (bit 0: mirror W, bit 1: flip H, bit 2:
    transpose, applied first), or its inverse."""
    if k & 4 and not inverse:
        x = x.transpose(-1, -2)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4 and inverse:
        x = x.transpose(-1, -2)
    return x


def tta_mean(fn, inputs: tuple, n: int) -> torch.Tensor:
    """Mean of ``fn(*inputs)`` over the first ``n`` (1, 2, 4 or 8) of the dihedral transforms
    of ``inputs`` (2: + mirror; 4: + vertical flips; 8: + transposes), each output transformed
    back. ``fn`` must map (B,C,H,W) inputs to a (B,C',H',W') output on the same grid (any
    stride); one batched call per input shape."""
    if n not in TTA_SIZES:
        raise ValueError(f"tta must be one of {TTA_SIZES}, got {n}")
    if n == 1:
        return fn(*inputs)
    b, out = inputs[0].shape[0], 0
    for ks in ([k for k in range(n) if k < 4], [k for k in range(n) if k >= 4]):
        if ks:
            y = fn(*[torch.cat([dihedral(t, k) for k in ks]) for t in inputs])
            for i, k in enumerate(ks):
                out = out + dihedral(y[i * b:(i + 1) * b], k, inverse=True)
    return out / n


def grow(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsample (B,C,h,w) to ``size`` (no-op when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class _OnnxRuntime:
    """An ONNX Runtime session (fp32): (B,C,H,W) float32 array -> output array."""

    def __init__(self, model, precision: str, threads: int, cache_dir: str | None = None):
        if precision != "fp32":
            raise ValueError(f"engine 'onnxruntime' runs fp32 only, not {precision}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("backend='onnx' needs onnxruntime: pip install onnxruntime") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        # no busy-waiting between runs: the torch and numpy work around the network needs the cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.label = "onnxruntime-fp32"

    def __call__(self, x):
        return self.session.run(None, {"x": x})[0]


class _OpenVINO:
    """An OpenVINO CPU model (dynamic shapes), fp32 or bf16: array -> array. One infer request
    per thread (a request is not thread-safe)."""

    def __init__(self, model, precision: str, threads: int, cache_dir: str | None = None):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"engine 'openvino' runs fp32 or bf16, not {precision}")
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeError("backend='openvino' needs openvino: pip install openvino") from None
        import threading
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if cache_dir:
            config["CACHE_DIR"] = cache_dir
        # a file path lets a cache hit skip reading the model; bytes: read_model parses ONNX directly
        # (~10x faster than convert_model)
        src = core.read_model(model) if isinstance(model, bytes) else str(model)
        self.compiled = core.compile_model(src, "CPU", config)
        self._local = threading.local()
        self.label = f"openvino-{precision}"

    def __call__(self, x):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req.infer({0: x}, share_outputs=False)[0]


_RUNTIMES = {"onnxruntime": _OnnxRuntime, "openvino": _OpenVINO}
