"""One click on a crack selects it (``select``): the person decides what the networks cannot.

Two ways, tried in order for each click:

- **The network's run.** Where the detectors see damage near the click (probability ≥ the damage
  policy's ``select_threshold``, lower than what ``auto`` keeps), the connected run of such pixels
  through the click is the selection: it follows the crack as far as the network sees it.
- **The line in the image.** Where they see nothing or only a short run (under 3 ``LINE_LENGTH``
  across: a faint crease, a scratch the network never learned), the thin line under the click is
  traced as well in the gray itself, as intelligent scissors
  do: a line too faint per pixel is strong when summed along its direction (oriented line filters
  on the high-passed gray); from the click it is followed both ways, step by step, turning slowly,
  until its response fades or a strong edge stops it.

Both work at the damage policy's working size (``DamagePolicy.work_scale``) and return a mask of
the photo's size.
"""
from __future__ import annotations

import cv2
import numpy as np

from stages.regions import touching

ANGLES = 16           # orientations of the line filters
LINE_LENGTH = 21      # px at the working size: how far a filter sums a line
SEARCH = 4            # px: how far from the click the line or the damage may lie
FADE = 0.35           # a trace stops where the line's response falls under this share of the click's
MIN_RESPONSE = 1.5    # levels: under this, there is no line at the click
EDGE_STOP = 4.0       # a trace stops at an edge this many times stronger than the line
MAX_STEPS = 20000


def select(gray: np.ndarray, points, detectors: dict, policy, tile=(1024, 128)) -> np.ndarray:
    """(H,W) uint8 gray + clicks ``[(x, y), ...]`` (pixels of the gray) -> (H,W) bool: the damage
    each click lies on. ``detectors``: ``{slot: MaskDetector}`` (their ``scratch_probabilities``);
    ``policy``: a ``pipeline.policy.DamagePolicy``."""
    h, w = gray.shape
    s = policy.work_scale(gray.shape)
    g = gray if s == 1 else cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    prob = np.maximum.reduce([d.scratch_probabilities(g, tile) for d in detectors.values()])
    lines = None
    out = np.zeros(g.shape, bool)
    for x, y in points:
        if not (0 <= float(x) < w and 0 <= float(y) < h):  # a click off the photo selects nothing (as a hint there)
            continue
        cx, cy = min(int(round(float(x) * s)), g.shape[1] - 1), min(int(round(float(y) * s)), g.shape[0] - 1)
        win = np.s_[max(0, cy - SEARCH):cy + SEARCH + 1, max(0, cx - SEARCH):cx + SEARCH + 1]
        run = np.zeros(g.shape, bool)
        if prob[win].max() >= policy.select_threshold:
            seed = np.zeros(g.shape, bool)
            seed[win] = prob[win] >= policy.select_threshold
            run = touching(prob >= policy.select_threshold, seed, connectivity=8)
        if _extent(run) < 3 * LINE_LENGTH:  # the network sees little or nothing here: the line in the image too
            lines = lines if lines is not None else line_responses(g)
            run |= trace(lines, cx, cy)
        out |= run
    if out.any():
        out = cv2.dilate(out.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if s != 1:
        out = cv2.resize(out.astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR) > 0
    return out


def _extent(mask: np.ndarray) -> int:
    """The longer side of a (H,W) bool mask's bounding box, px (0: empty)."""
    ys, xs = np.nonzero(mask)
    return 0 if not len(ys) else int(max(ys.max() - ys.min(), xs.max() - xs.min())) + 1


def line_responses(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H,W) uint8 -> ``(responses (ANGLES,H,W) float32, edge strength (H,W) float32)``: the
    high-passed gray (gray minus its 3-px blur: a thin line stands out, broad shading does not)
    averaged along a ``LINE_LENGTH``-px line at each of ``ANGLES`` orientations; signed (a bright
    line positive), in gray levels. Edge strength: the gray's gradient, levels per px."""
    g = gray.astype(np.float32)
    hp = g - cv2.GaussianBlur(g, (0, 0), 3)
    r = LINE_LENGTH // 2
    out = np.empty((ANGLES, *g.shape), np.float32)
    for k in range(ANGLES):
        t = np.pi * k / ANGLES
        kern = np.zeros((LINE_LENGTH, LINE_LENGTH), np.float32)
        cv2.line(kern, (round(r - r * np.cos(t)), round(r - r * np.sin(t))),
                 (round(r + r * np.cos(t)), round(r + r * np.sin(t))), 1.0, 1)
        out[k] = cv2.filter2D(hp, -1, kern / kern.sum(), borderType=cv2.BORDER_REFLECT)
    edge = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) / 8
    return out, cv2.GaussianBlur(edge, (0, 0), 1)


def trace(lines: tuple[np.ndarray, np.ndarray], x: int, y: int) -> np.ndarray:
    """The thin line through (x, y) of ``line_responses``, followed both ways: (H,W) bool."""
    resp, edge = lines
    _, h, w = resp.shape
    y0, y1, x0, x1 = max(0, y - SEARCH), min(h, y + SEARCH + 1), max(0, x - SEARCH), min(w, x + SEARCH + 1)
    win = np.abs(resp[:, y0:y1, x0:x1])
    k, dy, dx = np.unravel_index(int(win.argmax()), win.shape)
    sy, sx = y0 + dy, x0 + dx
    strength = float(resp[k, sy, sx])
    out = np.zeros((h, w), bool)
    if abs(strength) < MIN_RESPONSE:
        return out
    sign, base = np.sign(strength), abs(strength)
    out[sy, sx] = True
    for direction in (1, -1):
        py, px, pk = float(sy), float(sx), int(k)
        for _ in range(MAX_STEPS):
            t = np.pi * pk / ANGLES
            best = None
            for dk in (-1, 0, 1):  # turn slowly: the next step's orientation within one of this one
                kk = (pk + dk) % ANGLES
                tt = np.pi * kk / ANGLES
                for off in (-1, 0, 1):  # and within a pixel across the line
                    ny = py + direction * np.sin(tt) + off * np.cos(t)
                    nx = px + direction * np.cos(tt) - off * np.sin(t)
                    iy, ix = int(round(ny)), int(round(nx))
                    if 0 <= iy < h and 0 <= ix < w:
                        v = sign * resp[kk, iy, ix]
                        if best is None or v > best[0]:
                            best = (v, ny, nx, kk, iy, ix)
            if best is None or best[0] < FADE * base or edge[best[4], best[5]] > EDGE_STOP * base \
                    or out[best[4], best[5]]:
                break
            _, py, px, nk, iy, ix = best
            # orientations wrap at pi: keep walking the same way along the line
            if abs(nk - pk) > ANGLES // 2:
                direction = -direction
            pk = nk
            out[iy, ix] = True
    return out
