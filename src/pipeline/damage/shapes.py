"""Competition-style damage: one shape per image (axis-aligned rectangle, ellipse, triangle,
random polygon, including spiky, self-intersecting ones) filled with one constant gray in [0, 100]
over 0.9-16 % of the image; the rule that recovers its mask from a pair or from the gray alone."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from stages.regions import fill_holes, label4

SHAPES = ("rectangle", "ellipse", "triangle", "polygon")



@dataclass
class Damage:
    """One damaged shape: its (H,W) bool mask, the constant fill gray, the shape kind."""

    mask: np.ndarray  # (H,W) bool, True = damaged
    fill: int         # the constant gray painted into the mask
    shape: str


def _raster(h: int, w: int, kind: str, pts) -> np.ndarray:
    im = Image.new("1", (w, h), 0)
    d = ImageDraw.Draw(im)
    if kind == "rectangle":
        d.rectangle(pts, fill=1)
    elif kind == "ellipse":
        d.ellipse(pts, fill=1)
    else:
        d.polygon([tuple(p) for p in pts], fill=1)
    return np.asarray(im, dtype=bool)


def _unit_shape(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices of a shape in a unit-ish frame centred on 0 (polygonal kinds only)."""
    if kind == "triangle":
        while True:
            p = rng.uniform(-0.5, 0.5, (3, 2))
            (ux, uy), (vx, vy) = p[1] - p[0], p[2] - p[0]
            area = 0.5 * abs(ux * vy - uy * vx)  # numpy 2 removed np.cross of 2-D vectors
            if area > 0.06:  # no slivers
                return p
    n = int(rng.integers(5, 16))
    if rng.random() < 0.5:  # star-shaped: spiky but simple
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.15, 0.5, n)
    else:                   # random order: self-intersecting
        ang = rng.uniform(0, 2 * np.pi, n)
        rad = rng.uniform(0.1, 0.5, n)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)


def random_damage(h: int, w: int, rng: np.random.Generator, min_area: float = 0.009,
                  max_area: float = 0.16, fill_range=(0, 100), shapes=SHAPES) -> Damage:
    """Draw one damage shape for an (h, w) image; its area fraction lies in [min_area, max_area]."""
    fill = int(rng.integers(fill_range[0], fill_range[1] + 1))
    for _ in range(50):
        kind = str(shapes[int(rng.integers(len(shapes)))])
        target = rng.uniform(min_area, max_area) * h * w
        if kind in ("rectangle", "ellipse"):
            r = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
            a = target / (np.pi / 4) if kind == "ellipse" else target
            bw, bh = min(w, max(1.0, np.sqrt(a * r))), min(h, max(1.0, np.sqrt(a / r)))
            x0, y0 = rng.uniform(0, w - bw + 1e-9), rng.uniform(0, h - bh + 1e-9)
            mask = _raster(h, w, kind, [x0, y0, x0 + bw - 1, y0 + bh - 1])
        else:
            unit = _unit_shape(kind, rng)
            probe = 256
            area = _raster(probe, probe, kind, unit * probe * 0.9 + probe / 2).sum() / (probe * 0.9) ** 2
            if area <= 0:
                continue
            pts = unit * np.sqrt(target / area)
            lo, hi = pts.min(0), pts.max(0)
            span = hi - lo
            if span[0] > w or span[1] > h:
                pts = pts * min(w / span[0], h / span[1])
                lo, hi = pts.min(0), pts.max(0)
                span = hi - lo
            off = np.array([rng.uniform(0, w - span[0] + 1e-9), rng.uniform(0, h - span[1] + 1e-9)])
            mask = _raster(h, w, kind, pts - lo + off)
        frac = mask.mean()
        if min_area <= frac <= max_area:
            return Damage(mask, fill, kind)
    # Tiny images cannot honour the area range; fall back to a centred rectangle.
    mask = np.zeros((h, w), bool)
    mask[h // 4: max(h // 4 + 1, 3 * h // 4), w // 4: max(w // 4 + 1, 3 * w // 4)] = True
    return Damage(mask, fill, "rectangle")


def apply_damage(gray: np.ndarray, damage: Damage, rng: np.random.Generator | None = None,
                 texture: int = 0) -> np.ndarray:
    """(H,W) uint8 gray -> a copy with the damaged pixels set to the fill value (plus uniform
    noise in [-texture, texture] when ``texture`` > 0: damage that is not one constant)."""
    out = gray.copy()
    if texture > 0 and rng is not None:
        noise = rng.integers(-texture, texture + 1, int(damage.mask.sum()))
        out[damage.mask] = np.clip(damage.fill + noise, 0, 255).astype(np.uint8)
    else:
        out[damage.mask] = damage.fill
    return out


def add_touching_region(rgb: np.ndarray, damage: Damage, rng: np.random.Generator) -> np.ndarray:
    """A hard case for detectors: paint a band of the fill's own gray into the clean photo
    (e.g. a letterbox bar), from one side of the damage outwards, so the fill touches
    surroundings of the same value. rgb (H,W,3) uint8 -> a modified copy."""
    out = rgb.copy()
    ys, xs = np.nonzero(damage.mask)
    if ys.size == 0:
        return out
    h, w = damage.mask.shape
    width = int(rng.integers(8, 64))
    side = int(rng.integers(4))
    if side == 0:
        out[max(0, ys.min() - width): ys.min() + 1] = damage.fill
    elif side == 1:
        out[ys.max(): min(h, ys.max() + 1 + width)] = damage.fill
    elif side == 2:
        out[:, max(0, xs.min() - width): xs.min() + 1] = damage.fill
    else:
        out[:, xs.max(): min(w, xs.max() + 1 + width)] = damage.fill
    return out


def mask_from_pair(damaged: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """The damage mask of a competition pair: ``damaged != gray`` with holes filled.

    Pixels inside the shape whose true gray happens to equal the fill value are holes of the
    difference and still count as damaged. damaged, gray: (H,W) uint8 -> (H,W) bool.
    """
    if damaged.shape != gray.shape:
        raise ValueError(f"input {damaged.shape} and ground truth {gray.shape} differ in size")
    return fill_holes(damaged != gray)


def rule_mask(gray: np.ndarray, max_fill: int = 100, min_pixels: int = 16) -> np.ndarray:
    """A no-learning detector: the largest connected region of one constant gray in
    [0, max_fill], holes filled. (H,W) uint8 -> (H,W) bool (all False if nothing found).
    """
    best, best_n = None, 0
    for v in np.unique(gray[gray <= max_fill]):
        lab, n = label4(gray == v)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        k = int(sizes.argmax())
        if sizes[k] > best_n:
            best_n, best = int(sizes[k]), lab == k + 1
    if best is None or best_n < min_pixels:
        return np.zeros(gray.shape, bool)
    return fill_holes(best)
