"""Hard negatives: fine detail of a photo's own (thin lines, dotted patterns, text, lines along
its edges, a mesh) that a damage detector must learn to leave alone."""
from __future__ import annotations

import cv2
import numpy as np

from .strokes import _stroke, _walk


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
