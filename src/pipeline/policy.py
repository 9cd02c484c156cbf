"""The policy of one restore, at the pipeline level: which preset applies (``choose_preset``),
whether an input keeps its own colour (``decide_colour``), which damage is repaired
(``DamagePolicy``, pipeline.yaml's ``damage:`` section) and what the restore reports (``Report``).
The stages know nothing of it: a preset only chooses the settings each call passes, and the
detectors give probability maps.

Two presets (``PRESETS``):

- ``competition``: the stages' own settings, chosen on the DACON metric (turned-down hole colour,
  pale colour); a colour photo keeps its colour, a toned print is coloured from its gray.
- ``photo``: for a person looking at a photo: a toned print (sepia, selenium, cyanotype) keeps its
  tone, a hole's colour continues the ring around it, gray photos get the colorizer's full
  colour, and a colour hint stops at strong edges.

``auto`` picks ``competition`` for an input that holds a competition shape (``competition_shape``:
a single-channel gray with one constant gray in [0, 100] under 0.5-20 % of it), else ``photo``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

PRESETS = ("auto", "competition", "photo")
COLOURS = {"auto": None, "keep": True, "recolour": False}  # --colour / the app's choice -> keep_colour
REPORTED = ("preset", "damage", "colour", "reference")  # what a Report gives the CLI manifest (``Report.fields``)

# competition_shape: the competition's inputs hold one shape of one gray in [0, 100] covering
# 0.9-16 % of the image; the margins take a slightly wider band.
SHAPE_MAX_FILL = 100
SHAPE_SHARE = (0.005, 0.20)
SHAPE_PURITY = 0.95  # the least share of the masked pixels that hold the fill gray

# toned: measured on 12 real prints, the mean tint per gray level has Lab chroma 4.8-25.6; a gray
# photo's is 0.
TONE_CHROMA = 4.0
TONE_HUE_SPREAD = 35.0  # degrees: the midtones' tints must share one hue within this


@dataclass(frozen=True)
class Preset:
    """The colour settings one preset passes to the colorizer (None: the stage's own setting).

    ``saturation`` / ``hole_saturation`` / ``hole_ring`` / ``temperature``: as the colorizer's
    settings of those names; ``hint_edges``: a hint's colour stops at strong edges (geodesic
    spread); ``keep_tone``: a toned print keeps its tone unless told to recolour; ``colorizer``:
    the slot that colours (the ``photo`` preset's own slot when the pipeline has one)."""
    name: str
    saturation: float | None = None
    hole_saturation: float | None = None
    hole_ring: float | None = None
    temperature: float | None = None
    hint_edges: bool = False
    keep_tone: bool = False
    colorizer: str = "colorize"

    def colour_settings(self) -> dict:
        """The colorizer's per-call settings of this preset (those it sets)."""
        keys = ("saturation", "hole_saturation", "hole_ring", "temperature")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        return {**out, "hint_edges": True} if self.hint_edges else out


COMPETITION = Preset("competition")
# chosen on held-out training photos (benchmarks/photo_colour.py --set heldout), reported on dev
PHOTO = Preset("photo", saturation=1.0, hole_saturation=1.0, hole_ring=1.0, temperature=0.45, hint_edges=True,
               keep_tone=True, colorizer="colorize_photo")
PRESET = {p.name: p for p in (COMPETITION, PHOTO)}


def check_preset(name: str | None) -> str:
    """``name`` if it is one of ``PRESETS`` (None: ``auto``); else one ValueError line."""
    name = name or "auto"
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return name


def competition_shape(gray: np.ndarray, mask: np.ndarray, colour: np.ndarray | None = None) -> bool:
    """Whether an (H,W) uint8 gray with its (H,W) bool damage mask is a competition input: no
    colour of its own (``colour`` None), and at least ``SHAPE_PURITY`` of the masked pixels hold
    one gray in [0, ``SHAPE_MAX_FILL``] over ``SHAPE_SHARE`` of the image."""
    if colour is not None or not mask.any():
        return False
    share = float(mask.mean())
    if not SHAPE_SHARE[0] <= share <= SHAPE_SHARE[1]:
        return False
    counts = np.bincount(gray[mask], minlength=256)
    return int(counts.argmax()) <= SHAPE_MAX_FILL and counts.max() >= SHAPE_PURITY * mask.sum()


def choose_preset(preset: str, gray: np.ndarray, mask: np.ndarray, colour: np.ndarray | None,
                  found_shape: bool = False) -> tuple[str, str]:
    """``(preset name, why)`` for one input (``preset``: one of ``PRESETS``). ``found_shape``: the
    shape detector found (and snapped to) a constant-gray shape; else the mask was given or is old-
    photo damage, and ``competition_shape`` decides."""
    if preset != "auto":
        return preset, f"preset={preset} was asked for"
    if found_shape and colour is None:
        return "competition", f"a competition shape found: one gray under {mask.mean():.1%} of a gray image"
    if not found_shape and competition_shape(gray, mask, colour):
        return "competition", f"a competition shape given: one gray under {mask.mean():.1%} of a gray image"
    return "photo", "no competition shape (one constant gray in [0, 100] under 0.5-20 % of a gray image)"


def tone_of(rgb: np.ndarray, size: int = 64) -> tuple[float, float]:
    """``(chroma, hue spread)`` of an (H,W,3) uint8 photo's mean tint per gray level over its
    midtones (Lab L 25-85): a toned print has one tint (chroma ≥ ``TONE_CHROMA``, one hue), a
    gray photo none. Hue spread in degrees (180 when there are no midtones)."""
    s = size / max(rgb.shape[:2])
    if s < 1:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    level = np.clip((lab[:, 0] / 10).astype(int), 0, 9)
    count = np.bincount(level, minlength=10)
    mean = np.stack([np.bincount(level, weights=lab[:, c], minlength=10) for c in (1, 2)], 1) / count.clip(1)[:, None]
    mid = np.arange(10)
    mid = (mid >= 2) & (mid <= 8) & (count >= max(4, 0.01 * len(lab)))
    if not mid.any():
        return 0.0, 180.0
    w = count[mid].astype(np.float64)
    chroma = float(np.average(np.hypot(*mean[mid].T), weights=w))
    hue = np.arctan2(mean[mid, 1], mean[mid, 0])
    r = np.hypot(np.average(np.cos(hue), weights=w), np.average(np.sin(hue), weights=w))
    spread = float(np.degrees(np.sqrt(max(0.0, -2 * np.log(max(r, 1e-9))))))  # circular standard deviation
    return chroma, spread


def toned(rgb: np.ndarray) -> bool:
    """Whether an (H,W,3) uint8 photo is a toned monochrome print (sepia, selenium, cyanotype ...)."""
    chroma, spread = tone_of(rgb)
    return chroma >= TONE_CHROMA and spread <= TONE_HUE_SPREAD


def decide_colour(preset: Preset, colour: np.ndarray | None, keep_colour: bool | None) -> tuple[np.ndarray | None, str]:
    """``(the (H,W,3) colour a restore keeps or None, what it does)`` for an input's own colour
    (None: a gray input). ``keep_colour``: True keeps what the input has, False colours it from
    its gray, None decides: a colour photo keeps its colour, and under a ``keep_tone`` preset a
    toned print keeps its tone."""
    from stages.processors import own_colour
    if colour is None:
        return None, "colourised (a gray input)"
    if keep_colour is False:
        return None, "colourised (recolour was asked for)"
    if keep_colour:
        return colour, "kept its own colour (keep was asked for)"
    if own_colour(colour):
        return colour, "kept its own colour (a colour photo)"
    if preset.keep_tone and toned(colour):
        return colour, "kept its own tone (a toned print)"
    return None, "colourised (a gray or toned photo)" if not preset.keep_tone else "colourised (a gray photo)"


SURE = 0.9             # the probability ``DamagePolicy.min_sure`` counts as sure
SHAPE_WHY = "a constant-gray shape"  # how the shape rule begins its reason (``found_shape`` reads it)
LINE_ELONGATION = 6.0  # a region this many times longer than wide counts as a line (``min_line``)
VIEWS = ("mirror", "flip", "rot180", "transpose", "rot90", "rot270", "antitranspose")  # stages.mask.VIEWS


@dataclass(frozen=True)
class DamagePolicy:
    """Which old-photo damage a restore repairs, from the scratch detectors' probabilities (one
    home: pipeline.yaml's ``damage:`` section; a pipeline saved before it takes these from its
    first scratch detector's config, ``from_stage_configs``).

    The scratch path: the detectors' probabilities (the highest kept) at the working size
    (``work_side``: a larger photo is brought down to this long side, where cracks have the widths
    the detectors learned; the mask is brought back up), over ``threshold``, regions under
    ``min_region`` px dropped. Asked for scratches, that is the mask. Under ``auto`` (a gate: leave
    undamaged photos alone) it is kept only when it covers ``min_damage`` of the image, is sure
    (probability ≥ ``SURE``) on ``min_sure`` of it and has ``min_line`` of it in long thin regions;
    failing that, the regions where ``min_votes`` voters (0: all) agree pass when they cover
    ``min_agree`` of the image (voters: each detector, and each detector's turned ``views``, a
    ``{slot: [view, ...]}`` of ``VIEWS``); else nothing. ``grow_threshold`` (None: off): a find
    then grows along this lower threshold. ``select_threshold``: what a click selects
    (``pipeline.select``)."""
    threshold: float = 0.5
    min_region: int = 0
    min_damage: float = 0.0
    min_sure: float = 0.0
    min_line: float = 0.0
    min_agree: float = 0.0
    min_votes: int = 0
    views: dict = field(default_factory=dict)
    grow_threshold: float | None = None
    work_side: int | None = None
    select_threshold: float = 0.2

    def __post_init__(self):
        for slot, vs in self.views.items():
            if isinstance(vs, str) or any(v not in VIEWS for v in vs):
                raise ValueError(f"damage.views.{slot} must be a list of {', '.join(VIEWS)}, got {vs!r}")
        if isinstance(self.min_votes, bool) or not isinstance(self.min_votes, int) or self.min_votes < 0:
            raise ValueError(f"damage.min_votes must be a whole number >= 0 (0: all voters), got {self.min_votes!r}")
        if self.work_side is not None and (isinstance(self.work_side, bool) or not isinstance(self.work_side, int)
                                           or self.work_side < 64):
            raise ValueError(f"damage.work_side must be None or at least 64 px, got {self.work_side!r}")

    @classmethod
    def of(cls, section: dict | None) -> "DamagePolicy":
        """pipeline.yaml's ``damage:`` section -> a policy; unknown keys are ignored (a warning)."""
        section = {k: v for k, v in dict(section or {}).items() if v is not None or k in ("grow_threshold", "work_side")}
        known = {f.name for f in fields(cls)}
        if set(section) - known:
            import logging
            logging.getLogger(__name__).warning("pipeline.yaml damage: ignoring unknown setting(s) %s",
                                                ", ".join(sorted(set(section) - known)))
        return cls(**{k: v for k, v in section.items() if k in known})

    @classmethod
    def from_stage_configs(cls, configs: dict) -> "DamagePolicy":
        """``{slot: raw config}`` of a pipeline saved before the policy -> the policy it ran: the
        first scratch detector's threshold, min_region and gate, every detector's ``agree_views``."""
        if not configs:
            return cls()
        first = next(iter(configs.values()))
        keys = ("threshold", "min_region", "min_damage", "min_sure", "min_line", "min_agree", "min_votes",
                "grow_threshold")
        views = {slot: list(c["agree_views"]) for slot, c in configs.items() if c.get("agree_views")}
        return cls(**{k: first[k] for k in keys if k in first}, views=views)

    @classmethod
    def of_checkpoint(cls, meta: dict, path, slots: list) -> "DamagePolicy":
        """The policy of a pipeline checkpoint: its pipeline.yaml's ``damage:`` section, or for one
        saved before it, the gate its first scratch detector held (``from_stage_configs``)."""
        if "damage" in meta:
            return cls.of(meta["damage"])
        from stages.checkpoint import read_stage_config
        return cls.from_stage_configs({s: read_stage_config(path / s).get("config") or {} for s in slots})

    def to_dict(self) -> dict:
        return asdict(self)

    def detect(self, grays: list, damage: str, points: list | None, shape_detector, detectors, tile,
               given: list | None = None) -> tuple:
        """``(masks, [(rule, why), ...])`` of same-size (H,W) uint8 grays: the shape detector's
        ``detect`` (``shape_detector()``: a ``MaskDetector``) finds a competition shape, the scratch
        path (``find``) over ``detectors()`` (``{slot: MaskDetector}``) the rest; ``damage``:
        ``shape``, ``scratches``, ``auto`` or ``none`` (nothing but the clicks); ``points``: per
        gray, clicks ``[(x, y), ...]`` (or None) whose selection (``pipeline.select``) is added;
        ``given``: per gray, a (H,W) bool mask that is used as it is (or None: detect)."""
        points, given = points or [None] * len(grays), given or [None] * len(grays)
        todo = [i for i, m in enumerate(given) if m is None]
        if len(todo) < len(grays):
            found = self.detect([grays[i] for i in todo], damage, [points[i] for i in todo], shape_detector,
                                detectors, tile) if todo else ([], [])
            masks, reasons = list(given), [("given", "a given mask")] * len(grays)
            for i, m, r in zip(todo, *found):
                masks[i], reasons[i] = m, r
            for i in (i for i in range(len(grays)) if i not in todo and points[i] is not None and len(points[i])):
                masks[i], reasons[i] = self._select(grays[i], points[i], masks[i], reasons[i], detectors, tile)
            return masks, reasons
        why: dict = {}

        def scratch(g, gated):
            m, rule, text = self.find(g, detectors(), gated, tile)
            why[id(g)] = (rule, text)
            return m
        if damage == "none":
            masks = [np.zeros(g.shape, bool) for g in grays]
            reasons = [("none", "no damage looked for")] * len(grays)
        else:
            masks = shape_detector().detect(grays, damage, scratch=scratch, tile=tile)
            reasons = [why.get(id(g)) or ("shape", f"{SHAPE_WHY} on {m.mean():.1%} of the image")
                       for g, m in zip(grays, masks)]
        for i, (g, p) in enumerate(zip(grays, points)):
            if p is not None and len(p):
                masks[i], reasons[i] = self._select(g, p, masks[i], reasons[i], detectors, tile)
        return masks, reasons

    def _select(self, gray, points, mask, reason, detectors, tile) -> tuple:
        from .select import select
        chosen = select(gray, points, detectors(), self, tile)
        return mask | chosen, ("points", f"{len(points)} click(s) selected {chosen.mean():.1%}; {reason[1]}")

    def work_scale(self, shape: tuple) -> float:
        """The factor (≤ 1) an (H, W) photo is brought down by to find damage."""
        return min(1.0, self.work_side / max(shape)) if self.work_side else 1.0

    def find(self, gray: np.ndarray, detectors: dict, gated: bool, tile=(1024, 128)) -> tuple[np.ndarray, str, str]:
        """(H,W) uint8 gray -> ``(mask (H,W) bool, rule, why)``: the scratch path with
        ``detectors`` (``{slot: MaskDetector}``, in order); ``gated``: under ``auto``."""
        from stages.processors import MaskProcessor
        s = self.work_scale(gray.shape)
        g = gray if s == 1 else cv2.resize(gray, (max(1, round(gray.shape[1] * s)), max(1, round(gray.shape[0] * s))),
                                           interpolation=cv2.INTER_AREA)
        post = MaskProcessor(kind="scratches", min_region=self.min_region)
        probs = [d.scratch_probabilities(g, tile) for d in detectors.values()]
        prob = np.maximum.reduce(probs)
        m = post(prob > self.threshold, g, "scratches")
        rule, why = "scratches", f"scratches asked for: {m.mean():.1%} over probability {self.threshold}"
        if gated:
            m, rule, why = self._gate(g, m, prob, probs, detectors, post, tile)
        low = self.grow_threshold
        if low is not None and low < self.threshold and m.any():
            from stages.regions import touching
            m = post(touching(prob > low, m), g, "scratches")
        if s != 1:
            m = cv2.resize(m.astype(np.uint8), gray.shape[::-1], interpolation=cv2.INTER_LINEAR) > 0
            why += f" (found at {g.shape[1]}x{g.shape[0]}, the working size)"
        return m, rule, why

    def _gate(self, g, m, prob, probs, detectors, post, tile) -> tuple[np.ndarray, str, str]:
        from stages.regions import line_share, touching
        share, sure = float(m.mean()), float((prob >= SURE).mean())
        lines = line_share(m, LINE_ELONGATION) if self.min_line > 0 else 1.0
        if not m.any():
            return m, "none", "nothing over the threshold: left alone"
        if share >= self.min_damage and sure >= self.min_sure and lines >= self.min_line:
            return m, "damage", (f"damage on {share:.1%} (≥ {self.min_damage:.1%}), {lines:.0%} of it in lines "
                                 f"(≥ {self.min_line:.0%}): repaired")
        failed = (f"a find of {share:.1%} (needs {self.min_damage:.1%}), {lines:.0%} in lines "
                  f"(needs {self.min_line:.0%})")
        views = [(d, v) for slot, d in detectors.items() for v in self.views.get(slot, ())]
        voters = len(probs) + len(views)
        need = min(self.min_votes or voters, voters)
        if not (self.min_agree > 0 and need >= 2) or share < self.min_agree:
            return np.zeros_like(m), "none", f"{failed}: left alone"
        probs = probs + [d.view_probabilities(g, v, tile) for d, v in views]
        votes = np.add.reduce([p > self.threshold for p in probs], dtype=np.int32)
        agreed = post(votes >= need, g, "scratches")
        if agreed.mean() < self.min_agree:
            return np.zeros_like(m), "none", (f"{failed}; {need} of {voters} voters agree on {agreed.mean():.2%} "
                                              f"(needs {self.min_agree:.2%}): left alone")
        return touching(m, agreed, connectivity=8), "agreement", (
            f"{failed}; {need} of {voters} voters agree on {agreed.mean():.2%} (≥ {self.min_agree:.2%}): "
            "the regions they agree on repaired")


def found_shape(reason: tuple) -> bool:
    """Whether a ``(rule, why)`` of ``DamagePolicy.detect`` says the shape detector found a shape
    (clicks added to it or not)."""
    return reason[0] == "shape" or (reason[0] == "points" and f"; {SHAPE_WHY} on " in reason[1])


@dataclass
class Report:
    """What one restore did, in words and numbers: ``preset`` and ``preset_why``; ``damage``, the
    rule that gave the mask (``given``, ``shape``, ``scratches``, ``damage``, ``agreement``,
    ``none``, ``points``), ``damage_why`` (the rule's reasons) and ``damage_share`` of the image;
    ``colour``, what happened to the colour; ``reference``, the matched reference (``{"name",
    "coverage"}``; name None: none matched) or None (none given); ``seconds`` per step."""
    preset: str
    preset_why: str
    damage: str
    damage_why: str
    damage_share: float
    colour: str
    reference: dict | None = None
    seconds: dict = field(default_factory=dict)

    @classmethod
    def of(cls, preset: tuple, damage: tuple, mask: np.ndarray, colour: str, references: bool, matched,
           seconds: dict) -> "Report":
        """A restore's report from its parts: ``(preset, why)``, ``(rule, why)`` of the damage, the
        mask, what happened to the colour, whether references were given and the one matched (a
        ``stages.Reference`` or None), ``seconds`` per step."""
        ref = None if not references else (
            {"name": Path(matched.source).name or None, "coverage": float(matched.valid.mean())}
            if matched is not None else {"name": None, "coverage": 0.0})
        return cls(*preset, *damage, float(mask.mean()) if mask.size else 0.0, colour, ref,
                   {k: round(v, 4) for k, v in seconds.items()})

    def to_dict(self) -> dict:
        return asdict(self)

    def fields(self) -> dict:
        """The report as the CLI manifest's columns (``REPORTED``)."""
        ref = self.reference
        return {"preset": self.preset, "damage": self.damage, "colour": self.colour,
                "reference": "" if ref is None else (f"{ref['name']} ({ref['coverage']:.0%})" if ref["name"]
                                                     else "none matched")}

    def lines(self) -> list[str]:
        """The report as a few lines a person reads."""
        ref = self.reference
        refs = [] if ref is None else [f"reference {ref['name']} matched, covering {ref['coverage']:.0%}"
                                       if ref["name"] else "no reference matched"]
        return [f"preset: {self.preset} ({self.preset_why})",
                f"damage: {self.damage_why} ({self.damage_share:.1%} of the image)",
                f"colour: {self.colour}", *refs]
