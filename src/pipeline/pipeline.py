"""``Pipeline``: a plain container of the three stages, with save/load and ``restore``."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from scipy import ndimage

from stages import CheckpointError, Stage
from stages.checkpoint import atomic_write_bytes, check_format

from .color import gray8_ab_to_rgb8
from .device import autocast, cpu_has_bf16, resolve_precision
from .io import to_gray, to_mask
from .tiling import tiled

FORMAT = "restore-pipeline/1"
SLOTS = ("mask", "inpaint", "colorize", "scratch")
SLOT_STAGE = {"mask": "mask", "scratch": "mask", "inpaint": "inpaint", "colorize": "colorize"}  # slot -> stage kind
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIONS = ("precision", "backend", "context", "tile_size", "tile_overlap", "hole_saturation")  # pipeline.yaml options
CHECKPOINTS_DIR = Path(__file__).parent / "checkpoints"


@dataclass
class Restoration:
    """``restore(..., return_intermediates=True)``: the result and what led to it."""
    image: Image.Image  # RGB result
    mask: Image.Image   # L, 255 = damaged (detected or given)
    gray: Image.Image   # L, the inpainted gray (equal to the input outside the mask)


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint folder path, or the name of one shipped with the package (e.g. ``demo``)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = CHECKPOINTS_DIR / str(name_or_path)
    if shipped.is_dir():
        return shipped
    known = sorted(d.name for d in CHECKPOINTS_DIR.iterdir() if d.is_dir()) if CHECKPOINTS_DIR.is_dir() else []
    raise CheckpointError(f"{name_or_path}: no such checkpoint folder"
                          + (f" (shipped checkpoints: {', '.join(known)})" if known else ""))


BACKENDS = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}  # -> modules needed


@functools.lru_cache(maxsize=None)
def _installed(backend: str) -> bool:  # asked on every stage call by backend="auto": look once
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in BACKENDS[backend])


@torch.inference_mode()
def _scale_inside(ab: torch.Tensor, mask: np.ndarray, factor: float) -> torch.Tensor:
    """(2,H,W) ab times ``factor`` where the (H,W) mask is set (in place, within its bounding box)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows):
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        inside = torch.from_numpy(np.ascontiguousarray(mask[box[1:]])).to(ab.device)
        ab[box] = torch.where(inside, ab[box] * factor, ab[box])
    return ab


class Pipeline:
    """mask detector -> inpainter -> colorizer. Any stage can be reassigned (``pipe.inpaint = …``).
    An optional second detector, ``scratch``, finds old-photo damage (scratches, cracks, spots,
    tears) where the ``mask`` detector finds no competition shape (see ``detect``).

    Options: ``precision`` (``fp32`` exact, ``bf16``, or ``auto``: bf16 where the hardware has
    it; or a mapping per slot, e.g. ``{"mask": "fp32", "inpaint": "auto", "colorize": "fp32"}``,
    missing slots ``auto``), ``tile_size`` / ``tile_overlap`` for large images, ``context``
    (pixels of surroundings the inpainter sees around the damaged region), ``hole_saturation``
    (the colour of the inpainted pixels is scaled by this: the colorizer is less sure of a
    smooth fill than of the photo around it), ``backend``
    (``torch``; ``openvino``: each network is exported to ONNX on first use and run by OpenVINO
    on the CPU, in bf16 when ``precision`` resolves to bf16, else fp32; ``onnx``: the same
    through ONNX Runtime, fp32; ``auto``: on the CPU the first of openvino, onnx installed, else
    torch).
    """

    def __init__(self, mask: Stage | None = None, inpaint: Stage | None = None,
                 colorize: Stage | None = None, precision: str = "fp32", tile_size: int = 1024,
                 tile_overlap: int = 128, context: int = 64, backend: str = "torch", scratch: Stage | None = None,
                 hole_saturation: float = 1.0):
        if backend not in ("torch", "onnx", "openvino", "auto"):
            raise ValueError(f"backend must be 'torch', 'openvino', 'onnx' or 'auto', got {backend!r}")
        if backend in BACKENDS and not _installed(backend):
            raise RuntimeError(f"backend={backend!r} needs {' and '.join(BACKENDS[backend])}: "
                               f"pip install {' '.join(BACKENDS[backend])}")
        self._stages: dict[str, Stage | None] = {}
        self.mask, self.inpaint, self.colorize, self.scratch = mask, inpaint, colorize, scratch
        self.precision = precision
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.context = context
        self.hole_saturation = hole_saturation
        self.backend = backend
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ stage slots
    def __getattr__(self, name):
        if name in SLOTS:
            return self.__dict__["_stages"].get(name)
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in SLOTS:
            if value is not None and not isinstance(value, Stage):
                raise TypeError(f"Pipeline.{name} must be a Stage, got {type(value).__name__}")
            if value is not None and value.name != SLOT_STAGE[name]:
                raise TypeError(f"Pipeline.{name} must be a {SLOT_STAGE[name]!r} stage, got a {value.name!r} stage")
            if value is not None:
                value.eval()
                if "device" in self.__dict__:
                    value.to(self.device)
            self._stages[name] = value
        else:
            super().__setattr__(name, value)

    @property
    def stages(self) -> dict:
        """The filled slots, ``{"mask": MaskDetector, ...}``."""
        return {k: v for k, v in self._stages.items() if v is not None}

    def to(self, device) -> "Pipeline":
        """Move every stage (and stages assigned later) to ``device``."""
        self.device = torch.device(device)
        for s in self.stages.values():
            s.to(self.device)
        return self

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={type(v).__name__ if v is not None else None}" for k, v in self._stages.items())
        return f"Pipeline({inner}, precision={self.precision!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """``path/pipeline.yaml`` + one stage folder per slot (``mask/``, ``inpaint/``, ``colorize/``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, stage in self.stages.items():
            stage.save(path / name, dtype=dtype)
        meta = {"format": FORMAT, "stages": {k: v.name for k, v in self.stages.items()},
                "options": {"precision": self.precision, "tile_size": self.tile_size,
                            "tile_overlap": self.tile_overlap, "context": self.context,
                            "hole_saturation": self.hole_saturation, "backend": self.backend}}
        atomic_write_bytes(path / "pipeline.yaml", yaml.safe_dump(meta, sort_keys=False).encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **options) -> "Pipeline":
        """Load a folder written by ``save`` (or a shipped name such as ``"demo"``)."""
        path = resolve_checkpoint(path)
        meta_file = path / "pipeline.yaml"
        if not meta_file.is_file():
            raise CheckpointError(f"{path}: not a pipeline checkpoint (pipeline.yaml is missing)")
        try:
            meta = yaml.safe_load(meta_file.read_text()) or {}
        except yaml.YAMLError as e:
            raise CheckpointError(f"{meta_file}: unreadable YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("stages", {}), dict):
            raise CheckpointError(f"{meta_file}: not a pipeline config")
        check_format(meta.get("format"), FORMAT, meta_file)
        stages = {}
        for name in meta.get("stages", {}):
            if name not in SLOTS:
                raise CheckpointError(f"{meta_file}: unknown slot {name!r} (slots: {', '.join(SLOTS)})")
            stages[name] = Stage.load(path / name)
        opts = {k: v for k, v in (meta.get("options") or {}).items() if k in OPTIONS}
        opts.update(options)
        return cls(**stages, **opts).to(device)

    # ------------------------------------------------------------------ restore
    def _need(self, name: str) -> Stage:
        stage = self._stages.get(name)
        if stage is None:
            raise RuntimeError(f"this Pipeline has no {name!r} stage")
        engine, precision = self.engine(name)
        want = None if engine is None else f"{engine}-{precision}"
        if stage.runtime != want:
            from . import engines
            model = None if want is None else self._onnx(stage)
            stage.use_runtime(model, engine, precision, cache_dir=engines.openvino_cache())
        return stage

    def _onnx(self, stage: Stage):
        """The stage's ONNX model (a cached file or bytes), exported once per stage object."""
        from . import engines
        memo = self.__dict__.setdefault("_onnx_memo", {})
        if id(stage) not in memo or memo[id(stage)][0] is not stage:
            memo[id(stage)] = (stage, engines.onnx_model(stage, engines.stage_digest(stage)))
        return memo[id(stage)][1]

    @property
    def hole_saturation(self) -> float:
        """Scale of the colour (ab) of the inpainted pixels, >= 0 (1: as predicted)."""
        return self.__dict__["_hole_saturation"]

    @hole_saturation.setter
    def hole_saturation(self, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"hole_saturation must be a number >= 0, got {value!r}")
        self.__dict__["_hole_saturation"] = float(value)

    @property
    def precision(self) -> str | dict:
        """``fp32`` | ``bf16`` | ``fp16`` (CUDA) | ``auto``, or a ``{slot: precision}`` mapping."""
        return self.__dict__["_precision_opt"]

    @precision.setter
    def precision(self, value) -> None:
        values = value.values() if isinstance(value, dict) else [value]
        if isinstance(value, dict) and set(value) - set(SLOTS):
            raise ValueError(f"precision: unknown slot(s) {sorted(set(value) - set(SLOTS))} (slots: {', '.join(SLOTS)})")
        for v in values:
            if str(v).lower() not in PRECISIONS:
                raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or a mapping per slot), got {v!r}")
        self.__dict__["_precision_opt"] = dict(value) if isinstance(value, dict) else value

    def engine(self, slot: str | None = None) -> tuple[str | None, str]:
        """What runs the networks (of ``slot``): ``(engine, precision)``, engine one of
        ``openvino``, ``onnxruntime`` or None (torch), e.g. ``("openvino", "bf16")``."""
        precision = self._precision(slot)
        backend = self._backend()
        if backend == "onnx":
            return "onnxruntime", "fp32"
        if backend == "openvino":  # OpenVINO silently runs fp32 where the CPU lacks bf16: say so
            return "openvino", precision if cpu_has_bf16() else "fp32"
        return None, precision

    def _backend(self) -> str:
        """``torch``, ``onnx`` or ``openvino``: what ``backend`` means on this device."""
        backend = self.backend
        if backend == "auto":
            return "torch" if self.device.type != "cpu" else next(
                (b for b in ("openvino", "onnx") if _installed(b)), "torch")
        if backend != "torch" and self.device.type != "cpu":
            raise RuntimeError(f"backend={backend!r} runs on the CPU, not {self.device}")
        return backend

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.require(a, None, ["C", "W"])).float().div(255)[None, None].to(self.device)

    def _batched(self, slot: str, method: str, gray: np.ndarray | list) -> tuple:
        """Run ``stage.<method>`` on one gray or a list of same-size grays as one batch (tiled
        when the stage has no ``work_size``); returns ``(stage, grays, output tensor)``."""
        stage = self._need(slot)
        grays = gray if isinstance(gray, list) else [gray]
        x = torch.cat([self._tensor(g) for g in grays])
        fn = getattr(stage, method)
        with torch.inference_mode(), autocast(self.device, self._precision(slot)):
            out = fn(x) if stage.config.get("work_size") else tiled(fn, x, self.tile_size, self.tile_overlap)
        return stage, grays, out

    def detect(self, gray: np.ndarray | list, damage: str | None = None) -> np.ndarray | list:
        """(H,W) uint8 damaged gray -> (H,W) bool mask (a list of same-size grays: one batch,
        a list of masks). ``damage`` says what to look for:

        - ``shape``: one constant-gray shape (competition inputs): the ``mask`` detector at its
          ``work_size``, snapped to the fill, one region, holes filled;
        - ``scratches``: old-photo scratches, cracks, spots and tears: the ``scratch`` detector
          (else the ``mask`` detector) at full size (its ``detail_size``), small regions dropped;
        - ``auto``: ``shape`` where the ``mask`` detector's prediction covers a constant fill,
          else ``scratches`` (an undamaged photo: nothing);
        - None: ``auto`` when the pipeline has a ``scratch`` detector, else the ``mask``
          detector's own ``kind``.
        """
        stage, grays, prob = self._batched("mask", "probabilities", gray)
        prob = prob[:, 0].float().cpu().numpy()
        if damage is None:
            damage = "auto" if self.scratch is not None else stage.config.get("kind", "shape")
        post = replace(stage.processor, kind=damage)
        masks = []
        for p, g in zip(prob, grays):
            m = p > stage.config["threshold"]
            kind = post.kind_of(m, g)
            masks.append(post(m, g, kind) if kind == "shape" else self._scratches(g, gate=damage == "auto"))
        return masks if isinstance(gray, list) else masks[0]

    def _scratches(self, gray: np.ndarray, gate: bool = False) -> np.ndarray:
        """(H,W) bool old-photo damage: the ``scratch`` detector (else the ``mask`` one) at its
        ``detail_size``, post-processed as scratches; ``gate``: nothing unless it covers at least
        the detector's ``min_damage`` share of the image (what ``auto`` asks before it touches a
        photo that may be undamaged)."""
        stage = self.scratch if self.scratch is not None else self.mask
        slot = "scratch" if self.scratch is not None else "mask"
        m = self._detail(stage, slot, gray) > stage.config["threshold"]
        m = stage.processor(m, gray, "scratches")
        if gate and m.mean() < stage.config.get("min_damage", 0.0):
            return np.zeros_like(m)
        return m

    def _detail(self, stage: Stage, slot: str, gray: np.ndarray) -> np.ndarray:
        """(H,W) damage probability at the detector's ``detail_size`` (None: full size, tiled)."""
        self._need(slot)
        x = self._tensor(gray)
        fn = stage.detail_probabilities
        with torch.inference_mode(), autocast(self.device, self._precision(slot)):
            out = fn(x) if stage.config.get("detail_size") else tiled(fn, x, self.tile_size, self.tile_overlap)
        return out[0, 0].float().cpu().numpy()

    def fill(self, gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(H,W) uint8 gray + (H,W) bool mask -> (H,W) uint8, equal to ``gray`` outside the mask.
        Only a window around the damage (plus ``context`` pixels) goes through the network."""
        if not mask.any():
            return gray.copy()
        stage = self._need("inpaint")
        grown = ndimage.binary_dilation(mask, iterations=1) if mask.sum() < 4 else mask
        ys, xs = np.flatnonzero(grown.any(1)), np.flatnonzero(grown.any(0))
        c = self.context
        y0, y1 = max(0, ys[0] - c), min(gray.shape[0], ys[-1] + 1 + c)
        x0, x1 = max(0, xs[0] - c), min(gray.shape[1], xs[-1] + 1 + c)
        g = self._tensor(gray[y0:y1, x0:x1])
        m = self._tensor(mask[y0:y1, x0:x1].astype(np.uint8) * 255)
        with torch.inference_mode(), autocast(self.device, self._precision("inpaint")):
            if stage.config.get("work_size"):
                out = stage.composite(g, m)
            else:
                out = tiled(lambda t: stage.composite(t[:, :1], t[:, 1:]), torch.cat([g, m], 1),
                            self.tile_size, self.tile_overlap)
        patch = np.clip(np.rint(out[0, 0].float().cpu().numpy() * 255), 0, 255).astype(np.uint8)
        result = gray.copy()
        region = mask[y0:y1, x0:x1]
        result[y0:y1, x0:x1][region] = patch[region]
        return result

    def color(self, gray: np.ndarray | list, mask: np.ndarray | list | None = None) -> np.ndarray | list:
        """(H,W) uint8 gray -> (H,W,3) uint8 RGB whose PIL gray equals ``gray`` (±1).
        A list of same-size grays is run as one batch and gives a list of images. ``mask``
        ((H,W) bool, or a list): the inpainted pixels, whose colour ``hole_saturation`` scales."""
        _, grays, ab = self._batched("colorize", "predict_ab", gray)
        masks = mask if isinstance(mask, list) else [mask] * len(grays)
        out = []
        for g, a, m in zip(grays, ab, masks):
            if m is not None and self.hole_saturation != 1.0:
                a = _scale_inside(a, np.asarray(m, bool), self.hole_saturation)
            out.append(gray8_ab_to_rgb8(g, a))
        return out if isinstance(gray, list) else out[0]

    def _precision(self, slot: str | None = None) -> str:
        p = self.precision
        want = str(p.get(slot, "auto") if isinstance(p, dict) else p).lower()
        if want == "auto" and self._stages.get(slot) is not None and self.device.type == "cpu" and cpu_has_bf16():
            return self._measured(slot)
        return resolve_precision(want, self.device)

    def _measured(self, slot: str) -> str:
        """``auto`` on a bf16-capable CPU: the faster of fp32 and bf16 for this slot's network
        through the backend in use, timed once per CPU model (``pipeline.engines``)."""
        from . import engines
        stage, backend = self._stages[slot], self._backend()
        if backend == "onnx":  # ONNX Runtime runs fp32 only
            return "fp32"
        memo = self.__dict__.setdefault("_auto_memo", {})
        key = (slot, id(stage), backend)
        if key not in memo or memo[key][0] is not stage:
            engine = "openvino" if backend == "openvino" else None
            model = self._onnx(stage) if engine else None
            memo[key] = (stage, engines.fastest_precision(stage, engine, model))
        return memo[key][1]

    def restore(self, img, mask=None, return_intermediates: bool = False, damage: str | None = None):
        """Restore one image.

        img: a path, PIL image or uint8 array of any size and mode (colour input is reduced to
        its gray first). mask: optional (path/PIL/array, nonzero = damaged, same size) — skips
        detection. damage: what the detector looks for (``shape``: one constant-gray shape, the
        competition's; ``scratches``: old-photo scratches, cracks, spots, tears; ``auto``; None:
        the detector's own setting). Returns a PIL RGB image of the input's size, or with
        ``return_intermediates=True`` a ``Restoration`` (``.image``, ``.mask``, ``.gray``).
        """
        gray = to_gray(img)                                                        # 1. the input's gray
        m = to_mask(mask, gray.shape) if mask is not None else self.detect(gray, damage)  # 2. the damage
        filled = self.fill(gray, m)                                                # 3. the gray, inpainted
        image = Image.fromarray(self.color(filled, m), "RGB")                      # 4. colour
        if not return_intermediates:
            return image
        return Restoration(image=image, mask=Image.fromarray(m.astype(np.uint8) * 255, "L"),
                           gray=Image.fromarray(filled, "L"))

    def restore_many(self, grays: list, masks: list | None = None, damage: str | None = None) -> list:
        """Restore several (H,W) uint8 grays of ONE size as batches; ``masks`` items may be None
        (detect; ``damage`` as in ``restore``). Returns ``Restoration`` objects in order."""
        masks = masks or [None] * len(grays)
        todo = [i for i, m in enumerate(masks) if m is None]
        found = self.detect([grays[i] for i in todo], damage) if todo else []
        masks = list(masks)
        for i, m in zip(todo, found):
            masks[i] = m
        filled = [self.fill(g, m) for g, m in zip(grays, masks)]
        images = self.color(filled, masks)
        return [Restoration(image=Image.fromarray(c, "RGB"), mask=Image.fromarray(m.astype(np.uint8) * 255, "L"),
                            gray=Image.fromarray(f, "L")) for c, m, f in zip(images, masks, filled)]

    def __call__(self, img, mask=None, return_intermediates: bool = False, damage: str | None = None):
        return self.restore(img, mask=mask, return_intermediates=return_intermediates, damage=damage)

