"""Old-photo damage over a photo: one to three registered kinds (``kinds.KINDS``) composited as a
soft layer, the ageing of a print, film grain, and the scan that sees it all."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .kinds import _layer

REAL_KINDS = ("scratch", "crack", "spots", "tear")

OLD_PRINT_KINDS = REAL_KINDS + ("web", "crease", "flake")  # with ``old_print`` (data.damage.print_prob)

LINE_KINDS = ("scratch", "crack", "shatter", "web", "crease", "straight")  # the kinds ``relief`` may lift



@dataclass
class RealDamage:
    """Damage as found on old prints: a soft layer of gray ``value`` with opacity ``alpha``
    (both (H,W) float32) over the photo; ``kinds`` names what was drawn."""

    alpha: np.ndarray
    value: np.ndarray
    kinds: tuple


def real_damage(h: int, w: int, rng: np.random.Generator, kinds=REAL_KINDS, worn: bool = False,
                relief: float = 0.0, thick: float = 0.0, faint: float = 0.0) -> RealDamage:
    """One to three kinds of old-photo damage for an (h, w) image: each kind bright (dust,
    emulsion scratches, paper showing through) or dark (dirt, cracks), mostly opaque; ``worn``:
    lines as on a real print (see ``_layer``); ``relief``: the share of line kinds drawn as lifted
    emulsion, a bright ridge with a dark shadow beside it (1-3 px off, one light direction);
    ``thick``: the share of damage drawn 1.5-3x coarser (a large scan's cracks, seen smaller);
    ``faint``: the share of kinds drawn at 0.3-0.7 of their opacity (hairline cracks a few tens of
    levels off the photo, as fine detail is). All 0 draw nothing extra: earlier streams are kept."""
    f = rng.uniform(1.5, 3.0) if thick and rng.random() < thick else 1.0
    hh, ww = (h, w) if f == 1 else (max(16, round(h / f)), max(16, round(w / f)))
    alpha = np.zeros((hh, ww), np.float32)
    value = np.zeros((hh, ww), np.float32)
    chosen = tuple(sorted({str(kinds[int(rng.integers(len(kinds)))]) for _ in range(int(rng.integers(1, 4)))}))
    for kind in chosen:
        a = _layer(hh, ww, kind, rng, worn) * rng.uniform(0.7, 1.0)
        if faint and rng.random() < faint:
            a *= rng.uniform(0.3, 0.7)
        bright = rng.random() < (0.8 if kind == "tear" else 0.6)
        v = rng.uniform(200, 255) if bright else rng.uniform(0, 55)
        layers = [(a, v)]
        if relief and kind in LINE_KINDS and rng.random() < relief:
            d, t = rng.uniform(1, 3), rng.uniform(0, 2 * np.pi)
            shade = cv2.warpAffine(a, np.float32([[1, 0, d * np.cos(t)], [0, 1, d * np.sin(t)]]), (ww, hh))
            layers = [(a, rng.uniform(200, 255)), (shade * (1 - a) * rng.uniform(0.5, 0.9), rng.uniform(0, 60))]
        for a, v in layers:
            take = a > alpha
            alpha = np.maximum(alpha, a)
            value[take] = v
    if f != 1:
        alpha, value = (cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) for x in (alpha, value))
    return RealDamage(alpha, value, chosen)


def apply_real_damage(gray: np.ndarray, damage: RealDamage, rng: np.random.Generator,
                      min_change: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(H,W) uint8 gray -> ``(damaged uint8, mask bool)``: the damage layer composited over the
    photo with a little noise of its own; the mask marks the pixels it visibly changed
    (by at least ``min_change`` gray levels: a white scratch over white sky needs no repair)."""
    g = gray.astype(np.float32)
    noise = rng.normal(0, rng.uniform(1, 6), g.shape).astype(np.float32)
    out = g * (1 - damage.alpha) + (damage.value + noise) * damage.alpha
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    mask = (np.abs(out.astype(np.int16) - gray.astype(np.int16)) >= min_change) & (damage.alpha > 0.2)
    return out, mask


def old_print(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H,W) uint8 gray of a clean photo -> the gray of an old print of it, scanned: faded
    contrast and tone curve, blur, paper texture, sometimes a halftone screen, vignetting, a
    frame, film grain and JPEG. Each step is drawn at random; sizes follow the image's size, so
    a 256-px and a 3,000-px scan both look like prints."""
    g = gray.astype(np.float32) / 255
    h, w = g.shape
    side = min(h, w)
    lo, hi = rng.uniform(0, 0.25), rng.uniform(0.7, 1.0)
    g = lo + (hi - lo) * g ** rng.uniform(0.7, 1.4)                       # fading, tone curve
    if rng.random() < 0.7:
        g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.3, 1.2) * max(1.0, side / 512))
    paper = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), side / rng.uniform(20, 80))
    g = g + paper / max(1e-6, float(np.abs(paper).max())) * rng.uniform(0, 0.06)
    if rng.random() < 0.1:                                                 # a halftone screen
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period, ang = rng.uniform(3, 6), rng.uniform(0, np.pi / 2)
        u, v = xx * np.cos(ang) + yy * np.sin(ang), -xx * np.sin(ang) + yy * np.cos(ang)
        g = g + rng.uniform(0.02, 0.06) * np.cos(2 * np.pi * u / period) * np.cos(2 * np.pi * v / period)
    if rng.random() < 0.4:                                                 # vignetting
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        g = g * (1 - rng.uniform(0.1, 0.4) * np.clip(r2 - 0.3, 0, None)) if rng.random() < 0.7 else \
            g + rng.uniform(0.1, 0.3) * np.clip(r2 - 0.5, 0, None)
    if rng.random() < 0.15:                                                # a frame (white or dark border)
        b = max(2, int(rng.uniform(0.02, 0.08) * side))
        frame = np.ones((h, w), bool)
        cv2.rectangle(frame.view(np.uint8), (b, b), (w - 1 - b, h - 1 - b), 0, -1)
        g[frame] = rng.uniform(0.85, 1.0) if rng.random() < 0.7 else rng.uniform(0.0, 0.15)
    out = np.clip(np.rint(g * 255), 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        out = add_grain(out, rng, rng.uniform(1, 6))
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 92))])
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def add_grain(gray: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Film grain: (H,W) uint8 + Gaussian noise of ``sigma`` levels, slightly blurred (grain is
    larger than a pixel)."""
    n = cv2.GaussianBlur(rng.normal(0, sigma * 1.6, gray.shape).astype(np.float32), (0, 0), 0.7)
    return np.clip(np.rint(gray.astype(np.float32) + n), 0, 255).astype(np.uint8)


def scan(gray: np.ndarray, rng: np.random.Generator, noise_max: float = 4.0) -> np.ndarray:
    """(H,W) uint8 gray of a print, damage and all -> its scan: the scanner's or camera's blur,
    sometimes a lower resolution scaled back up, sharpening (halos beside edges), sensor noise and
    JPEG, each drawn at random, sizes following the image's. A real scan sees the damage through
    all of these; damage drawn after them (crisp, with noise of its own) teaches a detector a
    shortcut that fails on every real scan. ``noise_max``: the sensor noise's largest standard
    deviation (levels, before its slight blur). The same ``rng`` state gives the same scan."""
    g = gray.astype(np.float32)
    h, w = g.shape
    k = max(1.0, min(h, w) / 512)
    if rng.random() < 0.8:
        g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.4, 1.2) * k)
    if rng.random() < 0.3:
        f = rng.uniform(0.5, 0.9)
        small = cv2.resize(g, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
        g = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        g = g + rng.uniform(0.3, 1.2) * (g - cv2.GaussianBlur(g, (0, 0), rng.uniform(0.8, 2.0) * k))
    if rng.random() < 0.5:
        noise = rng.normal(0, rng.uniform(1, noise_max) * 1.4, g.shape).astype(np.float32)
        g = g + cv2.GaussianBlur(noise, (0, 0), 0.6)
    out = np.clip(np.rint(g), 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 93))])[1],
                           cv2.IMREAD_GRAYSCALE)
    return out


def scan_pair(clean: np.ndarray, damaged: np.ndarray, damage: RealDamage, rng: np.random.Generator,
              min_change: int = 12, noise_max: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A damaged print and the same print undamaged, both (H,W) uint8, through one and the same
    ``scan`` -> ``(clean scan, damaged scan, mask bool)``; the mask marks the pixels the damage
    visibly changed in the scan (as in ``apply_real_damage``; the blur may carry it a pixel out)."""
    seed = int(rng.integers(2 ** 63 - 1))
    a, b = (scan(x, np.random.default_rng(seed), noise_max) for x in (clean, damaged))
    near = cv2.dilate(damage.alpha, np.ones((3, 3), np.uint8)) > 0.2
    return a, b, (np.abs(b.astype(np.int16) - a.astype(np.int16)) >= min_change) & near
