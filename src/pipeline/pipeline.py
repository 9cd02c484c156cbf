"""``Pipeline``: a plain container of the stages, with save/load, and ``restore``: the chain
detect -> fill -> color, each step one stage's own inference method. What runs each network
(backend, precision) is ``pipeline.engines``' business."""
from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from stages import Stage
from stages.processors import Hints, Reference, stretch_contrast

from . import engines, folder, policy
from .folder import CHECKPOINTS_DIR, FORMAT, MOVED, SCRATCH_SLOTS, SLOT_STAGE, SLOTS, resolve_checkpoint  # noqa: F401
from .io import read_input
from .policy import Report


@dataclass
class Restoration:
    """``restore(..., return_intermediates=True)``: the result and what led to it."""
    image: Image.Image  # RGB result
    mask: Image.Image   # L, 255 = damaged (detected or given)
    gray: Image.Image   # L, the inpainted gray (equal to the input outside the mask)
    report: Report | None = None  # which preset ran and why, the damage, the colour, the reference, the timings


class Pipeline:
    """mask detector -> inpainter -> colorizer, each slot reassignable (``pipe.inpaint = …``);
    optional slots: ``scratch`` and ``scratch2`` (old-photo damage), ``colorize_photo`` (the
    ``photo`` preset's colorizer). Options, saved in pipeline.yaml (``pipeline.folder``):
    ``precision`` and ``backend`` (``pipeline.engines``), ``tile_size`` / ``tile_overlap``,
    ``preset``, and in its ``damage:`` section ``damage_policy`` (``policy.DamagePolicy``)."""

    def __init__(self, mask: Stage | None = None, inpaint: Stage | None = None, colorize: Stage | None = None,
                 precision: str | dict = "fp32", tile_size: int = 1024, tile_overlap: int = 128,
                 backend: str = "torch", scratch: Stage | None = None, scratch2: Stage | None = None,
                 colorize_photo: Stage | None = None, preset: str = "auto",
                 damage_policy: "policy.DamagePolicy | dict | None" = None):
        self.preset = policy.check_preset(preset)
        self.damage_policy = (damage_policy if isinstance(damage_policy, policy.DamagePolicy)
                              else policy.DamagePolicy.of(damage_policy))
        self.backend = backend
        self._stages: dict[str, Stage | None] = {}
        self.device = torch.device("cpu")
        self.mask, self.inpaint, self.colorize, self.scratch, self.scratch2 = mask, inpaint, colorize, scratch, scratch2
        self.colorize_photo = colorize_photo
        self.precision, self.tile_size, self.tile_overlap = precision, tile_size, tile_overlap

    # ------------------------------------------------------------------ slots and options
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
                value.eval().to(self.device)
            self._stages[name] = value
        elif name == "precision":
            super().__setattr__(name, engines.check_precision(value, SLOTS))
        else:
            super().__setattr__(name, engines.check_backend(value) if name == "backend" else value)

    @property
    def stages(self) -> dict:
        """The filled slots, ``{"mask": MaskDetector, ...}``."""
        return {k: v for k, v in self._stages.items() if v is not None}

    @property
    def damage(self) -> str:
        """What ``detect`` looks for when not told: ``auto`` with a scratch detector, else the mask
        detector's ``kind``."""
        if any(self._stages.get(s) is not None for s in SCRATCH_SLOTS):
            return "auto"
        return self._ready("mask").config["kind"]

    def to(self, device) -> "Pipeline":
        """Move every stage (and stages assigned later) to ``device``."""
        self.device = torch.device(device)
        for s in self.stages.values():
            s.to(self.device)
        return self

    def engine(self, slot: str | None = None) -> tuple[str | None, str]:
        """What runs the network of ``slot``: ``(engine, precision)``, e.g. ``("openvino", "bf16")``."""
        return engines.choose(self._stages.get(slot), slot, self.backend, self.precision, self.device)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={type(v).__name__}" for k, v in self.stages.items())
        return f"Pipeline({inner}, precision={self.precision!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """``path/pipeline.yaml`` + one stage folder per filled slot (``mask/``, ``inpaint/`` ...)."""
        return folder.save(path, self.stages, {k: getattr(self, k) for k in OPTIONS}, self.damage_policy, dtype)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **options) -> "Pipeline":
        """Load a folder written by ``save`` or a shipped name (``"demo"``); ``options`` override the saved ones."""
        stages, saved = folder.load(path, device, options)
        return cls(**stages, **{**{k: v for k, v in saved.items() if k in OPTIONS or k == "damage_policy"},
                                **options}).to(device)

    # ------------------------------------------------------------------ the chain
    def _ready(self, slot: str) -> Stage:
        stage = self._stages.get(slot)
        if stage is None:
            raise RuntimeError(f"this Pipeline has no {slot!r} stage")
        return engines.install(stage, slot, self.backend, self.precision, self.device)

    def detect(self, gray, damage: str | None = None, points=None, explain: bool = False):
        """(H,W) uint8 gray -> (H,W) bool mask (a list of same-size grays: one batch, a list of
        masks), by the damage policy (``self.damage_policy``): ``damage`` ``shape``, ``scratches``,
        ``auto``, ``none`` or None (``self.damage``); ``points``: clicks ``[(x, y), ...]`` (a list per
        gray for a list), each adding the damage it lies on; ``explain``: ``(masks, (rule, why))``."""
        single = not isinstance(gray, list)
        grays = [gray] if single else gray
        masks, reasons = self.damage_policy.detect(grays, damage or self.damage, [points] if single else points,
                                                   lambda: self._ready("mask"), self._detectors, self._tile)
        if explain:
            return (masks[0], reasons[0]) if single else (masks, reasons)
        return masks[0] if single else masks

    def fill(self, gray, mask, reference=None):
        """(H,W) uint8 gray + (H,W) bool mask -> (H,W) uint8 gray, equal to ``gray`` outside the
        mask: ``Inpainter.inpaint`` (``reference``: an aligned ``stages.Reference``, or None)."""
        if not mask.any():
            return gray.copy()
        return self._ready("inpaint").inpaint(gray, mask, tile=self._tile, reference=reference)

    def color(self, gray, mask=None, saturation: float | None = None, reference=None, hints=None,
              preset: str = "competition"):
        """(H,W) uint8 gray (+ (H,W) bool mask of the inpainted pixels) -> (H,W,3) uint8 RGB whose
        PIL gray equals ``gray`` (±1); lists run as one batch (``Colorizer.colorize``), with the
        colour settings of ``preset`` (``policy.Preset``); ``saturation`` (None: the preset's),
        ``reference`` (a ``stages.Reference`` or a list) and ``hints`` (or a list) per call."""
        grays = gray if isinstance(gray, list) else [gray]
        holes, refs = (v if isinstance(v, list) else [v] * len(grays) for v in (mask, reference))
        hints = hints if isinstance(gray, list) and hints is not None else [hints] * len(grays)
        p = policy.PRESET[preset]
        settings = p.colour_settings()
        if saturation is not None:
            settings["saturation"] = saturation
        slot = p.colorizer if self._stages.get(p.colorizer) is not None else "colorize"
        out = self._ready(slot).colorize(grays, holes, tile=self._tile, references=refs,
                                         hints=[Hints.of(h) for h in hints], **settings)
        return out if isinstance(gray, list) else out[0]

    def _detectors(self) -> dict:
        """The scratch path's detectors, ready: ``{slot: MaskDetector}`` (without any, the mask detector)."""
        return {s: self._ready(s) for s in [s for s in SCRATCH_SLOTS if self._stages.get(s) is not None] or ["mask"]}

    @property
    def _tile(self) -> tuple[int, int]:
        return self.tile_size, self.tile_overlap

    def restore(self, img, mask=None, return_intermediates: bool = False, damage: str | None = None,
                saturation: float | None = None, references=None, hints=None, keep_colour: bool | None = None,
                normalise: bool = False, preset: str | None = None, points=None):
        """Restore one image (a path, PIL image or uint8 array, any size and mode) -> a PIL RGB image
        of its size, or with ``return_intermediates`` a ``Restoration`` (``.image``, ``.mask``,
        ``.gray``, ``.report``). ``mask``: nonzero = damaged (skips detection); ``damage``,
        ``points``: as in ``detect``; ``saturation``: as in ``color``; ``references``: photos of the
        scene (a ``references.Library``, an index or a folder); ``hints``: ``[(x, y, colour), ...]``
        known colours; ``keep_colour``: True keeps the input's colour, False colours from its gray,
        None decides (``policy.decide_colour``); ``normalise``: a faded print's tones spread again;
        ``preset``: ``auto``, ``competition`` or ``photo`` (None: ``self.preset``)."""
        gray, m, colour = read_input(img, mask)
        r = self.restore_many([gray], [m], damage, saturation, references, [hints], [colour], normalise,
                              keep_colour=keep_colour, preset=preset, points=[points])[0]
        return r if return_intermediates else r.image

    def restore_many(self, grays: list, masks: list | None = None, damage: str | None = None,
                     saturation: float | None = None, references=None, hints: list | None = None,
                     colours: list | None = None, normalise: bool = False, keep_colour: bool | None = None,
                     preset: str | None = None, points: list | None = None) -> list:
        """Several (H,W) uint8 grays of ONE size -> ``Restoration`` objects in order. Per gray:
        ``masks`` (None: detect), ``hints``, ``points``, ``colours`` (the input's (H,W,3) colour, or
        None); the rest as in ``restore``. Each gray gets its own preset; colour runs in one batch
        per preset."""
        n = len(grays)
        colours, hints = list(colours or [None] * n), hints or [None] * n
        ask = policy.check_preset(preset or self.preset)
        t0 = time.perf_counter()
        masks = list(masks or [None] * n)
        todo = [i for i, m in enumerate(masks) if m is None]
        masks, reasons = self.damage_policy.detect(grays, (damage or self.damage) if todo else "none", points,
                                                   lambda: self._ready("mask"), self._detectors, self._tile, masks)
        t1 = time.perf_counter()
        chosen = [policy.choose_preset(ask, g, m, None if keep_colour is False else c, policy.found_shape(r))
                  for g, m, c, r in zip(grays, masks, colours, reasons)]
        kept = [policy.decide_colour(policy.PRESET[p], c, keep_colour) for (p, _), c in zip(chosen, colours)]
        lib = None
        if references is not None:
            from .references import open_library
            lib = open_library(references)
        matched = [lib.match(g, m) if lib is not None else None for g, m in zip(grays, masks)]
        filled = [self.fill(g, m, r) for g, m, r in zip(grays, masks, matched)]
        if normalise:
            filled = [f if o is not None else stretch_contrast(f, m) for f, m, (o, _) in zip(filled, masks, kept)]
        refs = [r if o is None else Reference(g, o, ~m, feather=0, exact=True)
                for g, m, r, (o, _) in zip(grays, masks, matched, kept)]
        t2 = time.perf_counter()
        images = [None] * n
        for name in dict.fromkeys(p for p, _ in chosen):  # one batch per preset, in order of first use
            idx = [i for i, (p, _) in enumerate(chosen) if p == name]
            out = self.color([filled[i] for i in idx], [masks[i] for i in idx], saturation, [refs[i] for i in idx],
                             [hints[i] for i in idx], preset=name)
            for i, c in zip(idx, out):
                images[i] = c
        seconds = {"detect": (t1 - t0) / max(1, len(todo)), "fill": (t2 - t1) / n,
                   "colour": (time.perf_counter() - t2) / n}
        return [Restoration(image=Image.fromarray(c, "RGB"), mask=Image.fromarray(m.astype("uint8") * 255, "L"),
                            gray=Image.fromarray(f, "L"),
                            report=Report.of(chosen[i], reasons[i], m, kept[i][1], lib is not None, matched[i],
                                             {k: v for k, v in seconds.items() if k != "detect" or i in todo}))
                for i, (c, m, f) in enumerate(zip(images, masks, filled))]

    __call__ = restore


OPTIONS = tuple(k for k in inspect.signature(Pipeline.__init__).parameters
                if k not in ("self", *SLOTS, "damage_policy"))  # pipeline.yaml options: the constructor's, one home
