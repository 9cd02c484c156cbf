"""Drawing primitives of old-photo damage: smooth random paths, strokes of varying width (worn:
jagged, uneven, broken), and a start on the border heading in."""
from __future__ import annotations

import cv2
import numpy as np


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


def _edge_start(h: int, w: int, rng: np.random.Generator) -> tuple:
    """A point on the image's border and a heading into it (a crease runs from edge to edge)."""
    side = int(rng.integers(4))
    t = rng.uniform(0.1, 0.9)
    start = [(t * w, 0), (w, t * h), (t * w, h), (0, t * h)][side]
    return start, side * np.pi / 2 + np.pi / 2 + rng.uniform(-0.5, 0.5)
