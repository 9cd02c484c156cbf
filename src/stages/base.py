"""``Stage``: the base class shared by the mask detector, the inpainter and the colorizer.

A stage is an ``nn.Module`` with a training ``loss(batch)``, validation ``metrics(batch)``, an
inference ``predict(...)``, ``freeze()``/``unfreeze()`` and a folder checkpoint
(``stages.checkpoint``). Its constructor arguments are its config: recorded once, when the
subclass's ``__init__`` is called (as diffusers' ``register_to_config``), and written to
config.yaml by ``save``; the constructor's signature is the one home of every default. Each class
sorts its keys into three sections: ``architecture`` (what the weights were built for),
``inference`` (what its pre/post-processing reads; may change after training, ``Stage.set``, or
per call) and ``training`` (loss weights).

Each stage owns its whole inference in one method from arrays to arrays (``MaskDetector.detect``,
``Inpainter.inpaint``, ``Colorizer.colorize``); ``pipeline.Pipeline`` only chains them.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import os
import threading
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .checkpoint import _plain, check_weights, read_file, read_stage_config, read_weights, write_stage
from .registry import STAGES, CheckpointError
from .runtimes import RUNTIMES, TorchAutocast, export_onnx

log = logging.getLogger(__name__)


def _record_config(init):
    """Wrap a Stage subclass's ``__init__`` so its bound arguments (defaults filled in, as plain
    YAML types) become ``self.config``; the outermost class's call wins."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        if type(self).__init__ is wrapper:
            self.config = {k: _plain(v) for k, v in bound.arguments.items() if k != "self"}
    return wrapper


_DEFER = threading.local()  # set while ``Stage.load(defer_net=True)`` builds a stage


@contextlib.contextmanager
def _deferring_nets():
    _DEFER.on = True
    try:
        yield
    finally:
        _DEFER.on = False


def register_stage(name: str):
    """Class decorator: make a Stage subclass loadable from checkpoints under ``name``."""
    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise TypeError(f"{cls!r} is not a Stage subclass")
        cls.name = name
        STAGES[name] = cls
        return cls
    return deco


class Stage(nn.Module):
    """Base of every stage. Subclasses take their hyperparameters as ``__init__`` keyword
    arguments (recorded as ``self.config``, see the module docstring), call
    ``super().__init__()`` and implement ``forward``, ``loss``, ``metrics``, ``predict`` and
    ``visualize``.
    """

    name: ClassVar[str] = ""
    architecture: ClassVar[tuple[str, ...]] = ()   # config keys that define the network's weights
    inference: ClassVar[tuple[str, ...] | None] = None  # keys its inference reads (None: all the others)
    training: ClassVar[tuple[str, ...]] = ()       # config keys used only by ``loss``

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_config(cls.__dict__["__init__"])

    def __init__(self):
        super().__init__()
        self.config: dict = {}
        self._frozen = False

    @classmethod
    def config_keys(cls) -> list[str]:
        """The constructor's arguments: every key of this stage's config."""
        return [k for k in inspect.signature(cls.__init__).parameters if k != "self"]

    @classmethod
    def inference_settings(cls) -> list[str]:
        """Config keys that only steer inference (changeable without retraining)."""
        if cls.inference is not None:
            return list(cls.inference)
        return [k for k in cls.config_keys() if k not in cls.architecture and k not in cls.training]

    @classmethod
    def sections(cls) -> dict[str, tuple[str, ...]]:
        """``{"architecture": keys, "inference": keys, "training": keys}``: every config key in one."""
        return {"architecture": cls.architecture, "inference": tuple(cls.inference_settings()),
                "training": cls.training}

    @classmethod
    def defaults(cls) -> dict:
        """Every config key with its default (the constructor's signature: their one home)."""
        return {k: _plain(p.default) for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}

    @classmethod
    def check_setting(cls, key: str, value) -> None:
        """Raise ``ValueError`` (one line) when ``value`` is not valid for ``key`` (default: any is)."""

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """A config read from an older checkpoint -> the current keys (default: unchanged)."""
        return config

    def set(self, key: str, value) -> None:
        """Change an inference setting (e.g. ``colorize.set("saturation", 0.5)``); architecture
        and training keys are refused: the weights were trained for them."""
        if key not in self.config:
            raise KeyError(f"{self.name} has no setting {key!r} (settings: {', '.join(sorted(self.config))})")
        if key not in self.inference_settings():
            kind = "an architecture" if key in self.architecture else "a training"
            raise ValueError(f"{self.name}.{key} is {kind} setting: the weights were trained with "
                             f"{key}={self.config[key]!r}; retrain to change it (inference settings: "
                             f"{', '.join(self.inference_settings())})")
        self.check_setting(key, value)
        self.config[key] = _plain(value)

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

    # ---------------------------------------------------------------- the network, maybe deferred
    def _set_net(self, build, attr: str = "net") -> None:
        """``self.<attr> = build()`` (``net``, or another network of the stage); while
        ``Stage.load(defer_net=True)`` runs, at its first use instead."""
        if getattr(_DEFER, "on", False):
            self.__dict__.setdefault("_net_builds", {})[attr] = build
        else:
            setattr(self, attr, build())

    @property
    def deferred(self) -> bool:
        """True while a torch network is not built yet (``Stage.load(defer_net=True)``)."""
        return bool(self.__dict__.get("_net_builds"))

    def __getattr__(self, name: str):
        if name in self.__dict__.get("_net_builds", ()):
            self._build_deferred()
        return super().__getattr__(name)

    def _build_deferred(self) -> None:
        weights, file = self.__dict__.get("_net_weights", (None, None))
        for attr, build in self.__dict__.pop("_net_builds", {}).items():
            net = build()
            if weights is not None:
                own = {f"{attr}.{k}": v for k, v in net.state_dict().items()}
                state = check_weights(file, own, {k: v for k, v in weights.items() if k.startswith(attr + ".")})
                net.load_state_dict({k[len(attr) + 1:]: v for k, v in state.items()})
            if self._frozen:
                for p in net.parameters():
                    p.requires_grad_(False)
            setattr(self, attr, net.to(self.device))
        self.__dict__.pop("_net_weights", None)
        self.train(self.training)

    def to(self, *args, **kwargs):
        if self.deferred:
            device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
            if (device is None or torch.device(device).type == "cpu") and dtype is None:
                return self  # a deferred stage lives on the CPU: nothing to move yet
        return super().to(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        if self.deferred:  # a move or cast of the whole stage includes its network
            self._build_deferred()
        return super()._apply(fn, *args, **kwargs)

    def state_dict(self, *args, **kwargs):
        if self.deferred:
            self._build_deferred()
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        if self.deferred:
            self._build_deferred()
        return super().load_state_dict(*args, **kwargs)

    def tensors(self) -> dict:
        """Every tensor of the stage by name, as ``state_dict``, without building a deferred network."""
        if not self.deferred:
            return self.state_dict()
        return {**nn.Module.state_dict(self), **self.__dict__["_net_weights"][0]}

    # ---------------------------------------------------------------- inference engines
    net_in_channels: ClassVar[int] = 1

    def run_net(self, x: torch.Tensor) -> torch.Tensor:
        """``self.net(x)``, or what ``use_runtime`` installed: torch under autocast, or an
        inference engine (CPU)."""
        rt = self.__dict__.get("_runtime")
        if rt is None:
            return self.net(x)
        if isinstance(rt, TorchAutocast):
            return rt(self.net, x)
        return torch.from_numpy(rt(x.detach().float().cpu().contiguous().numpy())).to(x.device)

    def export_onnx(self, path: str | os.PathLike | None = None) -> bytes:
        """The network (not the pre/post-processing around it) as ONNX bytes: input ``x``
        (B,C,H,W) float32 with H, W multiples of the stage's padding, output ``y``. Also written to
        ``path`` (atomically) when given."""
        return export_onnx(self.net, self.net_in_channels, path)

    def use_runtime(self, model: bytes | str | os.PathLike | None, engine: str = "onnxruntime",
                    precision: str = "fp32", threads: int | None = None, cache_dir: str | None = None) -> "Stage":
        """Run the network through an inference engine on the CPU, or through torch again with
        ``model=None`` (under autocast when ``precision`` is bf16 or fp16). ``model``: ONNX bytes
        from ``export_onnx`` or an ONNX file. ``engine``: ``onnxruntime`` (fp32) or ``openvino``
        (``precision`` fp32, or bf16 on CPUs with AVX512-BF16/AMX; ``cache_dir``: OpenVINO's
        compiled-model cache). Inference only; the torch weights stay as they are."""
        if model is not None and engine not in RUNTIMES:
            raise ValueError(f"unknown engine {engine!r} (engines: {', '.join(RUNTIMES)})")
        self.__dict__.pop("_runtime", None)
        if model is None and precision != "fp32":
            self.__dict__["_runtime"] = TorchAutocast(precision)
        elif model is not None:
            self.__dict__["_runtime"] = RUNTIMES[engine](model, precision, threads or torch.get_num_threads(),
                                                         cache_dir)
        return self

    @property
    def runtime(self) -> str | None:
        """What runs the network, e.g. ``"openvino-bf16"`` or ``"torch-bf16"``; None: torch, fp32."""
        rt = self.__dict__.get("_runtime")
        return None if rt is None else rt.label

    # ---------------------------------------------------------------- checkpoints
    @property
    def device(self) -> torch.device:
        """The device of the first parameter or buffer (the CPU for a deferred network)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write ``path/config.yaml`` and ``path/model.safetensors`` (each atomically).

        ``dtype=torch.float16`` halves the file; floating tensors are restored to fp32 on load.
        """
        return write_stage(path, self.name, self.config, self.state_dict(), dtype)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
             defer_net: bool = False) -> "Stage":
        """Rebuild a stage from a folder written by ``save``. The class comes from the registry
        (``config.yaml: stage``); ``MaskDetector.load`` refuses a folder holding another stage.
        ``defer_net`` (CPU only): build the torch network at its first use, not now; a stage whose
        network an inference engine runs from its cache never builds it (nor imports its library).
        """
        path = Path(path)
        meta = read_stage_config(path)
        klass = STAGES[meta["stage"]]
        if not issubclass(klass, cls):
            raise CheckpointError(f"{path}: holds a {klass.__name__} ({meta['stage']!r} stage), "
                                  f"not a {cls.__name__}")
        config = klass.upgrade_config(dict(meta.get("config") or {}))
        unknown = sorted(set(config) - set(klass.defaults()))
        if unknown:  # a setting this version no longer has (or not yet): the load goes on without it
            log.warning("%s/config.yaml: ignoring unknown %s setting(s) %s", path, klass.__name__, ", ".join(unknown))
            config = {k: v for k, v in config.items() if k not in unknown}
        config["encoder_weights"] = None  # the weights come from the checkpoint, never a download
        defer = defer_net and torch.device(map_location).type == "cpu"
        try:
            with _deferring_nets() if defer else contextlib.nullcontext():
                stage = klass(**config)
        except TypeError as e:
            raise CheckpointError(f"{path}/config.yaml: invalid {klass.__name__} config ({e})") from None
        if not stage.deferred:
            stage.load_state_dict(read_weights(path, stage.state_dict()))
            return stage.to(map_location).eval()
        state = read_file(path)
        deferred = tuple(f"{a}." for a in stage.__dict__["_net_builds"])
        net = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items() if k.startswith(deferred)}
        own = nn.Module.state_dict(stage)
        nn.Module.load_state_dict(stage, check_weights(path / "model.safetensors", own,
                                                       {k: v for k, v in state.items() if not k.startswith(deferred)}))
        stage.__dict__["_net_weights"] = (net, path / "model.safetensors")
        return stage.eval()
