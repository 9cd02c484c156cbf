"""``Pipeline``: a plain container of the stages, with save/load, and ``restore``: the chain
detect -> fill -> color, each step one stage's own inference method. What runs each network
(backend, precision) is ``pipeline.engines``' business."""
from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from stages import CheckpointError, Stage
from stages.processors import Hints, Reference, stretch_contrast
from stages.checkpoint import check_format
from stages.registry import atomic_write_bytes

from . import engines, policy
from .io import read_input
from .policy import Report

FORMAT = "restore-pipeline/1"
SLOT_STAGE = {"mask": "mask", "inpaint": "inpaint", "colorize": "colorize", "scratch": "mask",
              "scratch2": "mask", "colorize_photo": "colorize"}  # slot -> stage
SCRATCH_SLOTS = ("scratch", "scratch2")  # the scratch path's detectors, in order
SLOTS = tuple(SLOT_STAGE)
MOVED = {"context": "inpaint", "hole_saturation": "colorize"}  # former pipeline options: their stages' at load
CHECKPOINTS_DIR = Path(__file__).parent / "checkpoints"


@dataclass
class Restoration:
    """``restore(..., return_intermediates=True)``: the result and what led to it."""
    image: Image.Image  # RGB result
    mask: Image.Image   # L, 255 = damaged (detected or given)
    gray: Image.Image   # L, the inpainted gray (equal to the input outside the mask)
    report: Report | None = None  # which preset ran and why, the damage, the colour, the reference, the timings


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


def _read_meta(path: Path) -> dict:
    """``path/pipeline.yaml``, checked: its format and slots, or one ``CheckpointError`` line."""
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
    for name in meta.get("stages", {}):
        if name not in SLOTS:
            raise CheckpointError(f"{meta_file}: unknown slot {name!r} (slots: {', '.join(SLOTS)})")
    return meta


class Pipeline:
    """mask detector -> inpainter -> colorizer, each slot reassignable (``pipe.inpaint = …``); an
    optional second detector, ``scratch``, finds old-photo damage, and an optional third,
    ``scratch2``, joins it there (see ``detect``); an optional second colorizer,
    ``colorize_photo``, colours for the ``photo`` preset. Options, saved in pipeline.yaml:
    ``precision``, ``backend`` (``pipeline.engines``), ``tile_size`` / ``tile_overlap``,
    ``preset`` (``pipeline.policy.PRESETS``: what ``restore`` uses when not told); and, in its
    own ``damage:`` section, ``damage_policy`` (``pipeline.policy.DamagePolicy``: which old-photo
    damage is repaired). The rest are stage settings (a pipeline.yaml saved with the former
    options ``context`` or ``hole_saturation`` gives them to its inpainter and colorizer at load)."""

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
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, stage in self.stages.items():
            stage.save(path / name, dtype=dtype)
        meta = {"format": FORMAT, "stages": {k: v.name for k, v in self.stages.items()},
                "options": {k: getattr(self, k) for k in OPTIONS}, "damage": self.damage_policy.to_dict()}
        atomic_write_bytes(path / "pipeline.yaml", yaml.safe_dump(meta, sort_keys=False).encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **options) -> "Pipeline":
        """Load a folder written by ``save`` or a shipped name (``"demo"``); ``options`` override the saved ones."""
        path = resolve_checkpoint(path)
        meta = _read_meta(path)
        saved = meta.get("options") or {}
        # an engine running a network from its cache needs no torch network: built at first use, if ever
        defer = engines.may_skip_torch(options.get("backend", saved.get("backend", "torch")), torch.device(device))
        stages = {name: Stage.load(path / name, defer_net=defer) for name in meta.get("stages", {})}
        if "damage" in meta:
            damage = policy.DamagePolicy.of(meta["damage"])
        else:  # saved before the damage policy: the gate its first scratch detector held
            from stages.checkpoint import read_stage_config
            damage = policy.DamagePolicy.from_stage_configs(
                {s: read_stage_config(path / s).get("config") or {} for s in SCRATCH_SLOTS if s in stages})
        for key, slot in MOVED.items():  # upgrade: a former pipeline option becomes its stage's setting
            if key in saved and stages.get(slot) is not None:
                stages[slot].set(key, saved[key])
        options.setdefault("damage_policy", damage)
        return cls(**stages, **{**{k: v for k, v in saved.items() if k in OPTIONS}, **options}).to(device)

    # ------------------------------------------------------------------ the chain
    def _ready(self, slot: str) -> Stage:
        stage = self._stages.get(slot)
        if stage is None:
            raise RuntimeError(f"this Pipeline has no {slot!r} stage")
        return engines.install(stage, slot, self.backend, self.precision, self.device)

    def detect(self, gray, damage: str | None = None, points=None, explain: bool = False):
        """(H,W) uint8 damaged gray -> (H,W) bool mask (a list of same-size grays: one batch, a
        list of masks): ``MaskDetector.detect`` finds a competition shape; the rest is the scratch
        path of the damage policy (``self.damage_policy``, ``pipeline.policy.DamagePolicy``) over
        the ``scratch`` and ``scratch2`` detectors (without them, the mask detector's). ``damage``:
        ``shape``, ``scratches``, ``auto``, ``none`` (only ``points``) or None (``self.damage``).
        ``points``: ``[(x, y), ...]`` clicks on damage (a list of such lists for a list of grays),
        each selecting the damage it lies on (``pipeline.select``), added to what ``damage``
        finds. ``explain``: return ``(masks, [(rule, why), ...])`` instead (for one gray, one
        pair): which rule decided and why."""
        single = not isinstance(gray, list)
        grays = [gray] if single else gray
        pts = [points] if single else (points or [None] * len(grays))
        damage = damage or self.damage
        slots = [s for s in SCRATCH_SLOTS if self._stages.get(s) is not None] or ["mask"]
        why: dict = {}

        def scratch(g, gated):
            m, rule, text = self.damage_policy.find(g, {s: self._ready(s) for s in slots}, gated, self._tile)
            why[id(g)] = (rule, text)
            return m
        if damage == "none":
            masks = [np.zeros(g.shape, bool) for g in grays]
            reasons = [("none", "no damage looked for")] * len(grays)
        else:
            masks = self._ready("mask").detect(grays, damage, scratch=scratch, tile=self._tile)
            reasons = [why.get(id(g)) or ("shape", f"a constant-gray shape on {m.mean():.1%} of the image")
                       for g, m in zip(grays, masks)]
        if any(p for p in pts):
            from .select import select
            dets = {s: self._ready(s) for s in slots}
            for i, (g, p) in enumerate(zip(grays, pts)):
                if p:
                    chosen = select(g, p, dets, self.damage_policy, self._tile)
                    masks[i] = masks[i] | chosen
                    reasons[i] = ("points", f"{len(p)} click(s) selected {chosen.mean():.1%}; "
                                  + reasons[i][1])
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
        PIL gray equals ``gray`` (±1); lists of same-size grays and masks run as one batch:
        ``Colorizer.colorize``. ``saturation``: this call's colour strength (None: the preset's);
        ``reference``: an aligned ``stages.Reference`` (a list: one per gray), or None; ``hints``:
        known colours, ``(x, y, colour)`` items or a ``stages.Hints`` (a list of them: one per gray);
        ``preset``: ``competition`` or ``photo``, whose colour settings this call passes
        (``pipeline.policy.Preset``)."""
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

    @property
    def _tile(self) -> tuple[int, int]:
        return self.tile_size, self.tile_overlap

    def restore(self, img, mask=None, return_intermediates: bool = False, damage: str | None = None,
                saturation: float | None = None, references=None, hints=None, keep_colour: bool | None = None,
                normalise: bool = False, preset: str | None = None, points=None):
        """Restore one image: a path, PIL image or uint8 array of any size and mode. ``mask``: optional (path/PIL/array, nonzero = damaged, same
        size), skips detection. ``damage`` and ``saturation``: as in ``detect`` and ``color``.
        ``references``: photos of the same scene (a ``pipeline.references.Library``, an index
        file or a folder): a verified match gives the hole's content and the colour where it
        covers. ``hints``: colours known at points, ``[(x, y, (r, g, b) or "#rrggbb"), ...]`` in
        pixels of the image (a colorizer with hint channels). ``keep_colour``: a colour photo
        keeps its own colour outside the damage, the hole's colour is taken from it (True; None:
        decided by ``pipeline.policy.decide_colour``: a colour photo keeps its colour, and under
        the ``photo`` preset a toned print its tone), or is coloured from its gray (False).
        ``normalise``: a faded print's tones spread again (its gray's range:
        ``stages.processors.stretch_contrast``). ``preset``: ``auto``, ``competition`` or ``photo``
        (None: the pipeline's ``preset``; ``pipeline.policy``). ``points``: ``[(x, y), ...]``
        clicks on damage: what each lies on is repaired too (``detect(points=...)``; with
        ``damage="none"`` only that). Returns a PIL RGB image of the
        input's size, or with ``return_intermediates=True`` a ``Restoration`` (``.image``,
        ``.mask``, ``.gray``, ``.report``)."""
        gray, m, colour = read_input(img, mask, keep_colour)
        r = self.restore_many([gray], [m], damage, saturation, references, [hints], [colour], normalise,
                              keep_colour=keep_colour, preset=preset, points=[points])[0]
        return r if return_intermediates else r.image

    def restore_many(self, grays: list, masks: list | None = None, damage: str | None = None,
                     saturation: float | None = None, references=None, hints: list | None = None,
                     colours: list | None = None, normalise: bool = False, keep_colour: bool | None = None,
                     preset: str | None = None, points: list | None = None) -> list:
        """Restore several (H,W) uint8 grays of ONE size as batches; ``masks`` items may be None
        (detect); ``hints``: one item per gray (see ``restore``), or None; ``colours``: per gray,
        the (H,W,3) uint8 colour of the input it came from (None: a gray input), kept or not as
        ``keep_colour`` and the preset decide (``restore``); ``normalise``: as in ``restore``
        (never a kept colour photo's gray); ``points``: per gray, clicks on damage (or None), added
        to a given mask or to what ``damage`` finds. Each gray gets its own preset; the colour runs
        in one batch per preset. Returns ``Restoration`` objects in order."""
        n = len(grays)
        colours = list(colours or [None] * n)
        ask = policy.check_preset(preset or self.preset)
        t0 = time.perf_counter()
        masks = list(masks or [None] * n)
        points = list(points or [None] * n)
        reasons = [("given", "a given mask") if m is not None else None for m in masks]
        todo = [i for i, m in enumerate(masks) if m is None]
        if todo:
            found, why = self.detect([grays[i] for i in todo], damage, [points[i] for i in todo], explain=True)
            for i, m, w in zip(todo, found, why):
                masks[i], reasons[i] = m, w
        for i in [i for i in range(n) if i not in todo and points[i]]:  # clicks beside a given mask
            chosen, (_, w) = self.detect(grays[i], "none", points[i], explain=True)
            masks[i], reasons[i] = masks[i] | chosen, ("points", w.split(";")[0] + "; and a given mask")
        t1 = time.perf_counter()
        chosen = [policy.choose_preset(ask, g, m, c) for g, m, c in zip(grays, masks, colours)]
        kept = [policy.decide_colour(policy.PRESET[p], c, keep_colour) for (p, _), c in zip(chosen, colours)]
        lib = None
        if references is not None:
            from .references import open_library
            lib = open_library(references)
        refs = [lib.match(g, m) if lib is not None else None for g, m in zip(grays, masks)]
        filled = [self.fill(g, m, r) for g, m, r in zip(grays, masks, refs)]
        if normalise:
            filled = [f if o is not None else stretch_contrast(f, m) for f, m, (o, _) in zip(filled, masks, kept)]
        matched = refs
        refs = [r if o is None else Reference(g, o, ~m, feather=0, exact=True)
                for g, m, r, (o, _) in zip(grays, masks, refs, kept)]
        t2 = time.perf_counter()
        hints = hints or [None] * n
        images = [None] * n
        for name in dict.fromkeys(p for p, _ in chosen):  # one batch per preset, in order of first use
            idx = [i for i, (p, _) in enumerate(chosen) if p == name]
            out = self.color([filled[i] for i in idx], [masks[i] for i in idx], saturation, [refs[i] for i in idx],
                             [hints[i] for i in idx], preset=name)
            for i, c in zip(idx, out):
                images[i] = c
        t3 = time.perf_counter()
        seconds = {"detect": (t1 - t0) / max(1, len(todo)) if todo else 0.0, "fill": (t2 - t1) / n,
                   "colour": (t3 - t2) / n}
        out = []
        for i, (c, m, f) in enumerate(zip(images, masks, filled)):
            share = float(m.mean()) if m.size else 0.0
            ref = None if lib is None else (
                {"name": os.path.basename(matched[i].source) or None, "coverage": float(matched[i].valid.mean())}
                if matched[i] is not None else {"name": None, "coverage": 0.0})
            report = Report(chosen[i][0], chosen[i][1], *reasons[i], share, kept[i][1], ref,
                            {k: round(v, 4) for k, v in seconds.items() if k != "detect" or i in todo})
            out.append(Restoration(image=Image.fromarray(c, "RGB"), mask=Image.fromarray(m.astype("uint8") * 255, "L"),
                                   gray=Image.fromarray(f, "L"), report=report))
        return out

    __call__ = restore


OPTIONS = tuple(k for k in inspect.signature(Pipeline.__init__).parameters
                if k not in ("self", *SLOTS, "damage_policy"))  # pipeline.yaml options: the constructor's, one home
