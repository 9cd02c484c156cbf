"""Synthetic damage, and the rule that recovers a competition mask from a pair.

Competition style (``random_damage``): one shape per image (axis-aligned rectangle, ellipse,
triangle, random polygon — including spiky, self-intersecting ones), filled with one constant
gray in [0, 100], covering 0.9–16 % of the image. Old-photo style (``real_damage``): thin
bright/dark scratches, branching cracks, dust and spots, torn edges and missing corners, with soft
edges and noise, over a photo that may carry film grain (``add_grain``). Everything is driven by
a ``numpy.random.Generator`` so it is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from stages.regions import fill_holes, label4  # noqa: F401  (re-exported: pipeline.damage.fill_holes)

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


# ----------------------------------------------------------------------- real old-photo damage
REAL_KINDS = ("scratch", "crack", "spots", "tear")


@dataclass
class RealDamage:
    """Damage as found on old prints: a soft layer of gray ``value`` with opacity ``alpha``
    (both (H,W) float32) over the photo; ``kinds`` names what was drawn."""

    alpha: np.ndarray
    value: np.ndarray
    kinds: tuple


def _walk(h: int, w: int, rng: np.random.Generator, length: float, bend: float, start=None, angle=None):
    """A smooth random path of about ``length`` px: (N,2) float points (x, y), starting at
    ``start`` (else anywhere) with heading ``angle`` (else random); ``bend``: radians per step."""
    step = 3.0
    p = np.array(start if start is not None else (rng.uniform(0, w), rng.uniform(0, h)), float)
    a = float(rng.uniform(0, 2 * np.pi) if angle is None else angle)
    turn, pts = 0.0, [p.copy()]
    for _ in range(max(2, int(length / step))):
        turn = 0.8 * turn + rng.normal(0, bend)  # curvature drifts smoothly
        a += turn
        p = p + step * np.array([np.cos(a), np.sin(a)])
        pts.append(p.copy())
        if not (-20 <= p[0] <= w + 20 and -20 <= p[1] <= h + 20):
            break
    return np.array(pts)


def _stroke(canvas: np.ndarray, pts: np.ndarray, width: float, rng: np.random.Generator, worn: bool = False) -> None:
    """Draw a path of varying width (±50 % along it) into a float canvas, anti-aliased. ``worn``
    (a real print's crack): the path zig-zags by about a pixel, its opacity varies along it
    (0.35–1) and about one part in eight is missing (the crack is broken)."""
    seg = max(2, len(pts) // int(rng.integers(2, 6)))
    if worn:
        pts = _jagged(pts, rng, rng.uniform(0.3, 0.8) * max(1.0, width / 2))
        seg = max(2, seg // 3)
    out = np.zeros_like(canvas) if worn else canvas
    for i in range(0, len(pts) - 1, seg):
        part = np.round(pts[i:i + seg + 1] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        t = max(1, int(round(width * rng.uniform(0.5, 1.5))))
        if worn and rng.random() < 0.12:
            continue
        cv2.polylines(out, [part], False, rng.uniform(0.35, 1.0) if worn else 1.0, thickness=t,
                      lineType=cv2.LINE_AA, shift=2)
    if worn:
        np.maximum(canvas, out, out=canvas)


def _jagged(pts: np.ndarray, rng: np.random.Generator, amp: float) -> np.ndarray:
    """A path (N,2) with each point pushed sideways by ~``amp`` px, half at random, half drifting:
    the small-scale zig-zag of a crack in emulsion, not the smooth curve of a pen."""
    if len(pts) < 3:
        return pts
    d = np.gradient(pts, axis=0)
    n = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    drift = np.cumsum(rng.normal(0, amp * 0.4, len(pts)))
    drift -= np.convolve(np.pad(drift, 4, mode="edge"), np.ones(9) / 9, mode="valid")  # only the short-range part
    return pts + n * (rng.normal(0, amp * 0.6, len(pts)) + drift)[:, None]


def _layer(h: int, w: int, kind: str, rng: np.random.Generator, worn: bool = False) -> np.ndarray:
    """(H,W) float32 coverage in [0,1] of one kind of damage; ``worn``: as on a real print (lines
    jagged, uneven and broken, cracks with flakes along them, crack webs irregular)."""
    c = np.zeros((h, w), np.float32)
    diag = float(np.hypot(h, w))
    if kind == "scratch":  # long, thin, nearly straight
        for _ in range(int(rng.integers(1, 6))):
            _stroke(c, _walk(h, w, rng, rng.uniform(0.15, 1.0) * diag, 0.01), rng.uniform(1, 3), rng, worn)
    elif kind == "straight":
        _straight(c, h, w, rng, worn)
    elif kind == "crack":  # jagged, branching
        for _ in range(int(rng.integers(1, 3))):
            main = _walk(h, w, rng, rng.uniform(0.2, 0.8) * diag, 0.06)
            _stroke(c, main, rng.uniform(1, 3.5), rng, worn)
            if worn:  # emulsion flaking off along the crack
                for x, y in main[rng.choice(len(main), int(rng.integers(0, 8)))]:
                    cv2.circle(c, (int(x * 4), int(y * 4)), int(rng.uniform(1, 3) * max(1.0, diag / 1200) * 4),
                               float(rng.uniform(0.5, 1)), -1, cv2.LINE_AA, shift=2)
            for _ in range(int(rng.integers(0, 5))):
                i = int(rng.integers(len(main)))
                d = main[min(i + 1, len(main) - 1)] - main[max(i - 1, 0)]
                a = np.arctan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)
                _stroke(c, _walk(h, w, rng, rng.uniform(0.05, 0.3) * diag, 0.08, main[i], a), rng.uniform(1, 2.5), rng,
                        worn)
    elif kind == "shatter":  # broken emulsion: long cracks from edge to edge that branch and meet
        _shatter(c, h, w, rng, worn)
    elif kind == "spots":  # dust, mould, flecks: many small soft dots
        n = int(rng.integers(5, 80))
        r = np.clip(rng.lognormal(0.3, 0.7, n), 0.6, 9)
        for x, y, rr in zip(rng.uniform(0, w, n), rng.uniform(0, h, n), r):
            cv2.circle(c, (int(x * 4), int(y * 4)), int(rr * 4), 1.0, -1, cv2.LINE_AA, shift=2)
    elif kind == "web":  # craquelure: a web of short connected cracks over part of the print
        _web(c, h, w, rng, worn)
    elif kind == "crease":  # a fold: one long, gently curving line across the print
        _stroke(c, _walk(h, w, rng, rng.uniform(0.6, 1.2) * diag, 0.004, *_edge_start(h, w, rng)),
                rng.uniform(1.5, 4) * max(1.0, diag / 1200), rng, worn)
    elif kind == "flake":
        _flakes(c, h, w, rng)
    else:  # tear / missing corner: a jagged bite out of an edge
        side = int(rng.integers(4))
        span = rng.uniform(0.1, 0.45) * (w if side % 2 == 0 else h)
        depth = rng.uniform(0.03, 0.15) * min(h, w)
        n = int(rng.integers(6, 14))
        t0 = rng.uniform(0, (w if side % 2 == 0 else h) - span)
        along = np.linspace(t0, t0 + span, n)
        into = np.concatenate([[0], rng.uniform(0.3, 1, n - 2) * depth, [0]])
        pts = np.stack([along, into], 1)
        if side == 1:
            pts = pts[:, ::-1]
        elif side == 2:
            pts = np.stack([pts[:, 0], h - 1 - pts[:, 1]], 1)
        elif side == 3:
            pts = np.stack([w - 1 - pts[:, 1], pts[:, 0]], 1)
        cv2.fillPoly(c, [np.round(pts * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
    sigma = rng.uniform(0.3, 0.9)  # soft edges, as in a scan
    return cv2.GaussianBlur(c, (0, 0), sigma).clip(0, 1)


def _flakes(c: np.ndarray, h: int, w: int, rng: np.random.Generator) -> None:
    """Flaked emulsion into ``c``: 1-11 irregular blobs."""
    diag = float(np.hypot(h, w))
    for _ in range(int(rng.integers(1, 12))):
        r = rng.uniform(0.004, 0.03) * diag
        n = int(rng.integers(6, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        pts = np.stack([x + np.cos(ang) * r * rng.uniform(0.4, 1, n), y + np.sin(ang) * r * rng.uniform(0.4, 1, n)], 1)
        cv2.fillPoly(c, [np.round(pts * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)


def _straight(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """1-3 ruler-straight scratches into ``c`` (a print slid over grit), half of them edge to edge;
    ``worn``: half of them broken and uneven as well (they stay straight)."""
    diag = float(np.hypot(h, w))
    for _ in range(int(rng.integers(1, 4))):
        start = _edge_start(h, w, rng) if rng.random() < 0.5 else (None, None)
        _stroke(c, _walk(h, w, rng, rng.uniform(0.3, 1.3) * diag, 0.0, *start),
                rng.uniform(1, 3) * max(1.0, diag / 1200), rng, worn and rng.random() < 0.5)


def _edge_start(h: int, w: int, rng: np.random.Generator) -> tuple:
    """A point on the image's border and a heading into it (a crease runs from edge to edge)."""
    side = int(rng.integers(4))
    t = rng.uniform(0.1, 0.9)
    start = [(t * w, 0), (w, t * h), (t * w, h), (0, t * h)][side]
    return start, side * np.pi / 2 + np.pi / 2 + rng.uniform(-0.5, 0.5)


def _shatter(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """A shattered emulsion into ``c``: 2-5 long cracks from edge to edge (1-3 px, more on large
    scans), 2-9 branches from one toward another, and (``worn``) chips lost along them."""
    diag = float(np.hypot(h, w))
    scale = max(1.0, diag / 1200)
    lines = [_walk(h, w, rng, rng.uniform(0.5, 1.3) * diag, 0.02, *_edge_start(h, w, rng))
             for _ in range(int(rng.integers(2, 6)))]
    for line in lines:
        _stroke(c, line, rng.uniform(1, 3) * scale, rng, worn)
    for _ in range(int(rng.integers(2, 10))):
        line = lines[int(rng.integers(len(lines)))]
        i = int(rng.integers(len(line)))
        d = line[min(i + 1, len(line) - 1)] - line[max(i - 1, 0)]
        a = np.arctan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.4)
        _stroke(c, _walk(h, w, rng, rng.uniform(0.05, 0.35) * diag, 0.05, line[i], a),
                rng.uniform(0.8, 2.5) * scale, rng, worn)
    if worn:
        for line in lines:
            for x, y in line[rng.choice(len(line), int(rng.integers(0, 6)))]:
                cv2.circle(c, (int(x * 4), int(y * 4)), int(rng.uniform(1, 4) * scale * 4),
                           float(rng.uniform(0.6, 1)), -1, cv2.LINE_AA, shift=2)


def _web(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """Craquelure into ``c``: 30-70 % of the borders of jittered Voronoi cells (cells 3-10 % of
    the image side) inside a soft random region, each a crack of 1-2 px (more on large scans);
    ``worn``: the borders zig-zag at the pixel scale and each crack has its own opacity."""
    from scipy.spatial import cKDTree
    side = min(h, w)
    cell = rng.uniform(0.03, 0.10) * side
    n = int(h * w / cell ** 2) + 4
    seeds = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = [cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), cell / 3) for _ in range(2)]
    amp = cell * 0.25 / max(1e-6, float(np.abs(warp[0]).max()))
    pts = np.stack([xx + amp * warp[0], yy + amp * warp[1]], -1)
    if worn:
        pts += np.stack([cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
                         for _ in range(2)], -1) * rng.uniform(3, 8)
    label = cKDTree(seeds).query(pts.reshape(-1, 2), workers=1)[1].reshape(h, w)
    keep = rng.uniform(0.3, 0.7)  # a share of the cell borders cracks, each border whole or not at all
    edge = np.zeros((h, w), bool)
    value = np.ones((h, w), np.float32)
    for a_, b_, out, val in ((label[:, 1:], label[:, :-1], edge[:, 1:], value[:, 1:]),
                             (label[1:], label[:-1], edge[1:], value[1:])):
        lo_, hi_ = np.minimum(a_, b_), np.maximum(a_, b_)
        key = lo_ * 7919 + hi_ * 104729
        out |= (a_ != b_) & ((key % 1000) < keep * 1000)
        if worn:  # one opacity per border, 0.35-1
            np.minimum(val, np.where(a_ != b_, 0.35 + 0.65 * ((key // 1000) % 97) / 96, 1.0), out=val)
    region = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), side / 6)
    region = region > np.quantile(region, rng.uniform(0.2, 0.7))  # the web covers 30-80 % of the print
    edge &= region & (rng.random((h, w)) > 0.03)
    k = max(1, int(round(rng.uniform(1, 2) * max(1.0, side / 700))))
    grown = cv2.dilate(edge.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    c[grown] = np.maximum(c[grown], cv2.erode(value, np.ones((k, k), np.uint8))[grown] if worn else 1.0)


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


def add_fine_detail(gray: np.ndarray, rng: np.random.Generator, contrast: float = 90,
                    edges: float = 0.0) -> np.ndarray:
    """(H,W) uint8 gray -> the same photo with fine detail of its own: thin lines (wires, chains,
    branches, hair; 25 to ``contrast`` levels darker or lighter than where they lie: never paper
    white or ink black up to 90, nearly so above), sometimes a patch of dotted pattern and a line
    of text; ``edges``: the chance of also lines along the photo's own edges (outlines, rims,
    frames: detail that follows the picture, as a crack does not) and a mesh (fence, net, window
    bars). Drawn *before* ``old_print``, they fade, blur and grain with the photo: hard negatives
    for the detector, which must tell them from damage on top."""
    h, w = gray.shape
    diag = float(np.hypot(h, w))
    g = gray.astype(np.float32)
    for _ in range(int(rng.integers(1, 7))):
        c = np.zeros((h, w), np.float32)
        _stroke(c, _walk(h, w, rng, rng.uniform(0.1, 0.7) * diag, rng.uniform(0.005, 0.08)),
                rng.uniform(1, 2.5) * max(1.0, diag / 1200), rng)
        shade = rng.uniform(25, contrast) * (1 if rng.random() < 0.5 else -1)
        target = np.clip(cv2.GaussianBlur(g, (0, 0), 3) + shade, *((20, 235) if contrast <= 90 else (5, 250)))
        a = c * rng.uniform(0.6, 1.0)
        g = g * (1 - a) + target * a
    if rng.random() < 0.5:  # a dotted pattern: a leopard's, a fish's, a print fabric's spots
        _dots(g, rng)
    if rng.random() < 0.3:
        text = "".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWXYZ 0123456789"), int(rng.integers(4, 16))))
        scale = rng.uniform(0.3, 1.0) * max(1.0, min(h, w) / 512)
        pos = (int(rng.uniform(0, 0.6) * w), int(rng.uniform(0.1, 0.95) * h))
        ink = float(np.clip(g[min(pos[1], h - 1), min(pos[0], w - 1)] + rng.choice([-1, 1]) * rng.uniform(40, 100), 20, 235))
        t = np.zeros((h, w), np.uint8)
        cv2.putText(t, text, pos, int(rng.integers(0, 8)), scale, 255, max(1, int(round(scale * 1.5))), cv2.LINE_AA)
        a = t.astype(np.float32) / 255
        g = g * (1 - a) + ink * a
    if edges and rng.random() < edges:
        _outlines(g, gray, rng, contrast)
        if rng.random() < 0.5:
            _mesh(g, rng)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def _outlines(g: np.ndarray, gray: np.ndarray, rng: np.random.Generator, contrast: float) -> None:
    """Into the float gray ``g``: 2-12 thin lines (1-2 px) traced along the photo's own edges
    (Canny on ``gray``), a shade off their ground, a pixel or two beside the edge or on it."""
    h, w = g.shape
    edges = cv2.Canny(cv2.GaussianBlur(gray, (0, 0), rng.uniform(0.8, 2.0)), 40, 120)
    found = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[0]
    found = [c for c in found if len(c) >= 0.04 * max(h, w)]
    if not found:
        return
    ground = cv2.GaussianBlur(g, (0, 0), 3)
    for k in rng.choice(len(found), min(len(found), int(rng.integers(2, 13))), replace=False):
        c = np.zeros((h, w), np.float32)
        pts = found[int(k)][:, 0].astype(np.float32) + rng.uniform(-2, 2, 2).astype(np.float32)
        cv2.polylines(c, [np.round(pts * 4).astype(np.int32)], False, 1.0,
                      int(rng.integers(1, 3)) * max(1, round(min(h, w) / 700)), cv2.LINE_AA, shift=2)
        shade = rng.uniform(25, contrast) * (1 if rng.random() < 0.5 else -1)
        a = c * rng.uniform(0.6, 1.0)
        g *= 1 - a
        g += np.clip(ground + shade, 20, 235) * a


def _mesh(g: np.ndarray, rng: np.random.Generator) -> None:
    """Into the float gray ``g``: a mesh of thin parallel lines, one or two families (a fence, a
    net, window bars), 5-25 px apart, over a soft part of the photo, a shade off the ground."""
    h, w = g.shape
    c = np.zeros((h, w), np.float32)
    step, ang = rng.uniform(5, 25) * max(1.0, min(h, w) / 700), rng.uniform(0, np.pi)
    diag = float(np.hypot(h, w))
    for a in ([ang] if rng.random() < 0.3 else [ang, ang + rng.uniform(np.pi / 4, np.pi / 2)]):
        d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        for t in np.arange(-diag, diag, step):
            p0, p1 = np.array([w / 2, h / 2]) + n * t - d * diag, np.array([w / 2, h / 2]) + n * t + d * diag
            cv2.line(c, tuple(np.round(p0 * 4).astype(int).tolist()), tuple(np.round(p1 * 4).astype(int).tolist()),
                     1.0, 1, cv2.LINE_AA, shift=2)
    small = rng.normal(0, 1, (h // 8 + 2, w // 8 + 2)).astype(np.float32)
    region = cv2.resize(cv2.GaussianBlur(small, (0, 0), min(h, w) / 64), (w, h), interpolation=cv2.INTER_LINEAR)
    c *= region > np.quantile(region, rng.uniform(0.4, 0.85))
    a = c * rng.uniform(0.4, 0.9)
    target = np.clip(cv2.GaussianBlur(g, (0, 0), 3) + rng.uniform(20, 70) * (1 if rng.random() < 0.5 else -1), 15, 240)
    g *= 1 - a
    g += target * a


def _dots(g: np.ndarray, rng: np.random.Generator) -> None:
    """Into the float gray ``g``: a jittered lattice of same-size dots (radius 1.5-6 px, a shade
    off the ground) over a soft random region, as spots of a pattern are, unlike scattered dust."""
    h, w = g.shape
    r = rng.uniform(1.5, 6) * max(1.0, min(h, w) / 1000)
    step = r * rng.uniform(2.5, 4.5)
    small = rng.normal(0, 1, (h // 8 + 2, w // 8 + 2)).astype(np.float32)  # a 1/8 grid: the region is soft anyway
    region = cv2.resize(cv2.GaussianBlur(small, (0, 0), min(h, w) / 64), (w, h), interpolation=cv2.INTER_LINEAR)
    region = region > np.quantile(region, rng.uniform(0.4, 0.85))
    dots = np.zeros((h, w), np.float32)
    ang = rng.uniform(0, np.pi)
    yy, xx = np.meshgrid(np.arange(-h, 2 * h, step) - h / 2, np.arange(-w, 2 * w, step) - w / 2, indexing="ij")
    jit = rng.normal(0, step * 0.15, (2, *yy.shape))
    x = w / 2 + xx * np.cos(ang) - yy * np.sin(ang) + jit[0]
    y = h / 2 + xx * np.sin(ang) + yy * np.cos(ang) + jit[1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    x, y = x[inside], y[inside]
    keep = region[y.astype(int), x.astype(int)]
    x, y = x[keep], y[keep]
    radii = (r * rng.uniform(0.8, 1.2, x.size) * 4).astype(int)
    for cx, cy, cr in zip((x * 4).astype(int).tolist(), (y * 4).astype(int).tolist(), radii.tolist()):
        cv2.circle(dots, (cx, cy), cr, 1.0, -1, cv2.LINE_AA, shift=2)
    target = np.clip(cv2.GaussianBlur(g, (0, 0), 3) + rng.uniform(40, 110) * (1 if rng.random() < 0.4 else -1), 15, 240)
    a = dots * rng.uniform(0.7, 1.0)
    g *= 1 - a
    g += target * a


OLD_PRINT_KINDS = REAL_KINDS + ("web", "crease", "flake")  # with ``old_print`` (data.damage.print_prob)


LINE_KINDS = ("scratch", "crack", "shatter", "web", "crease", "straight")  # the kinds ``relief`` may lift


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


def add_grain(gray: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Film grain: (H,W) uint8 + Gaussian noise of ``sigma`` levels, slightly blurred (grain is
    larger than a pixel)."""
    n = cv2.GaussianBlur(rng.normal(0, sigma * 1.6, gray.shape).astype(np.float32), (0, 0), 0.7)
    return np.clip(np.rint(gray.astype(np.float32) + n), 0, 255).astype(np.uint8)
