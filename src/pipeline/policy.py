"""The policy of one restore, at the pipeline level: which preset applies (``choose_preset``),
whether an input keeps its own colour (``decide_colour``), and what the restore reports
(``Report``). The stages know nothing of it: a preset only chooses the settings each call passes.

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

from dataclasses import asdict, dataclass, field

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
PHOTO = Preset("photo", saturation=1.0, hole_saturation=1.0, hole_ring=1.0, temperature=0.3, hint_edges=True,
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


def choose_preset(preset: str, gray: np.ndarray, mask: np.ndarray, colour: np.ndarray | None) -> tuple[str, str]:
    """``(preset name, why)`` for one input (``preset``: one of ``PRESETS``)."""
    if preset != "auto":
        return preset, f"preset={preset} was asked for"
    if competition_shape(gray, mask, colour):
        return "competition", (f"a competition shape: one gray under {mask.mean():.1%} of a gray image")
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


@dataclass
class Report:
    """What one restore did, in words and numbers: ``preset`` and ``preset_why``; ``damage``, the
    rule that gave the mask (``given``, ``detected``, ``none found``) and its ``damage_share`` of
    the image; ``colour``, what happened to the colour; ``reference``, the matched reference
    (``{"name", "coverage"}``) or None; ``seconds`` per step."""
    preset: str
    preset_why: str
    damage: str
    damage_share: float
    colour: str
    reference: dict | None = None
    seconds: dict = field(default_factory=dict)

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
        ref = (f"reference {self.reference['name']} matched, covering {self.reference['coverage']:.0%}"
               if self.reference else "no reference matched")
        return [f"preset: {self.preset} ({self.preset_why})",
                f"damage: {self.damage} ({self.damage_share:.1%} of the image)",
                f"colour: {self.colour}", ref]
