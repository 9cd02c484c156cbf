"""The kinds of old-photo damage, by name: a registry (``KINDS``) in place of an if-chain.

A kind is a function ``draw(c, h, w, rng, worn)`` that draws its coverage in [0, 1] into the
(H,W) float32 canvas ``c``; ``register_kind("name")`` adds one, and every name in
``data.damage.print_kinds`` or ``real_damage(kinds=...)`` is looked up here. ``worn``: as on a real
print (lines jagged, uneven and broken, cracks with flakes along them, crack webs irregular).
Each kind draws from ``rng`` in a fixed order: the same seed gives the same damage.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from .strokes import _edge_start, _stroke, _walk

KINDS: dict[str, Callable] = {}


def register_kind(name: str):
    """Decorator: register ``draw(c, h, w, rng, worn)`` as the damage kind ``name``."""
    def add(fn: Callable) -> Callable:
        if name in KINDS:
            raise ValueError(f"damage kind {name!r} is registered twice")
        KINDS[name] = fn
        return fn
    return add


def _layer(h: int, w: int, kind: str, rng: np.random.Generator, worn: bool = False) -> np.ndarray:
    """(H,W) float32 coverage in [0,1] of one kind of damage (``KINDS``), with soft edges."""
    if kind not in KINDS:
        raise ValueError(f"damage kind {kind!r}: unknown (choose from {', '.join(KINDS)})")
    c = np.zeros((h, w), np.float32)
    KINDS[kind](c, h, w, rng, worn)
    sigma = rng.uniform(0.3, 0.9)  # soft edges, as in a scan
    return cv2.GaussianBlur(c, (0, 0), sigma).clip(0, 1)


@register_kind("scratch")
def _scratch(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """1-5 long, thin, nearly straight scratches."""
    diag = float(np.hypot(h, w))
    for _ in range(int(rng.integers(1, 6))):
        _stroke(c, _walk(h, w, rng, rng.uniform(0.15, 1.0) * diag, 0.01), rng.uniform(1, 3), rng, worn)


@register_kind("crack")
def _crack(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """1-2 jagged, branching cracks (``worn``: emulsion flaking off along them)."""
    diag = float(np.hypot(h, w))
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


@register_kind("spots")
def _spots(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """Dust, mould, flecks: 5-79 small soft dots."""
    n = int(rng.integers(5, 80))
    r = np.clip(rng.lognormal(0.3, 0.7, n), 0.6, 9)
    for x, y, rr in zip(rng.uniform(0, w, n), rng.uniform(0, h, n), r):
        cv2.circle(c, (int(x * 4), int(y * 4)), int(rr * 4), 1.0, -1, cv2.LINE_AA, shift=2)


@register_kind("crease")
def _crease(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """A fold: one long, gently curving line across the print, from an edge."""
    diag = float(np.hypot(h, w))
    _stroke(c, _walk(h, w, rng, rng.uniform(0.6, 1.2) * diag, 0.004, *_edge_start(h, w, rng)),
            rng.uniform(1.5, 4) * max(1.0, diag / 1200), rng, worn)


@register_kind("tear")
def _tear(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """A torn edge or missing corner: a jagged bite out of one side."""
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



@register_kind("flake")
def _flakes(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """Flaked emulsion into ``c``: 1-11 irregular blobs."""
    diag = float(np.hypot(h, w))
    for _ in range(int(rng.integers(1, 12))):
        r = rng.uniform(0.004, 0.03) * diag
        n = int(rng.integers(6, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        pts = np.stack([x + np.cos(ang) * r * rng.uniform(0.4, 1, n), y + np.sin(ang) * r * rng.uniform(0.4, 1, n)], 1)
        cv2.fillPoly(c, [np.round(pts * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)


@register_kind("straight")
def _straight(c: np.ndarray, h: int, w: int, rng: np.random.Generator, worn: bool = False) -> None:
    """1-3 ruler-straight scratches into ``c`` (a print slid over grit), half of them edge to edge;
    ``worn``: half of them broken and uneven as well (they stay straight)."""
    diag = float(np.hypot(h, w))
    for _ in range(int(rng.integers(1, 4))):
        start = _edge_start(h, w, rng) if rng.random() < 0.5 else (None, None)
        _stroke(c, _walk(h, w, rng, rng.uniform(0.3, 1.3) * diag, 0.0, *start),
                rng.uniform(1, 3) * max(1.0, diag / 1200), rng, worn and rng.random() < 0.5)


@register_kind("shatter")
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


@register_kind("web")
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
