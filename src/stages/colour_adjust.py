"""The colour adjustments a colorizer's prediction takes after its network: a reference photo's
colour (``_with_reference``; the photo's own colour is an ``exact`` one), colour hints spread from
their points (``_with_hints``), a hole's colour continued from the ring around it
(``_ring_inside``) and scaled (``_scale_inside``). Each takes and returns (2,H,W) ab; none trains.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .color import rgb_to_lab
from .processors import Hints, Reference, edge_distance


def _with_reference(ab: torch.Tensor, ref: Reference, gray: np.ndarray, bins: int = 16,
                    prior: float = 64.0) -> torch.Tensor:
    """(2,H,W) predicted ab blended with the reference's ab by its weight. Where the reference
    does not reach, the prediction is first corrected by how it erred where the reference does,
    per gray level (``bins`` levels; a level seen on few pixels leans on the mean error, with
    ``prior`` pixels' weight): the same scene's sky, walls and road keep their gray and colour.
    An ``exact`` reference (the photo's own colour) gives its ab, carried into the hole by Telea."""
    ab_ref = rgb_to_lab(torch.from_numpy(ref.rgb).permute(2, 0, 1)[None].float().div(255).to(ab.device))[0, 1:]
    if ref.exact:  # the photo's own colour: the hole's comes in from around it
        return _ring_inside(ab_ref, ~ref.valid, 1.0) if not ref.valid.all() else ab_ref
    w = torch.from_numpy(ref.weight).to(ab.device)
    ab = ab.float()
    full = torch.from_numpy(ref.weight >= 1).to(ab.device)
    if 256 <= int(full.sum()) < full.numel():
        level = torch.from_numpy(gray.astype(np.int64) * bins // 256).to(ab.device)
        err = (ab_ref - ab)[:, full]                                    # (2, n) where the reference is whole
        seen = level[full]
        count = torch.bincount(seen, minlength=bins).float()
        mean = err.mean(1, keepdim=True)
        sums = torch.stack([torch.bincount(seen, weights=e, minlength=bins) for e in err])
        ab = ab + ((sums + prior * mean) / (count + prior))[:, level]
    return ab * (1 - w) + ab_ref * w


def _with_hints(ab: torch.Tensor, hints: Hints, gray: np.ndarray, spread: float, tone: float,
                reach: float = 0.05, grid: int = 256, edges: bool = False) -> torch.Tensor:
    """(2,H,W) ab corrected by colour hints: each point's error (its colour's ab minus the ab
    there) is spread with a weight exp(-d²/2(spread·width)²)·exp(-Δgray²/2·tone²) (an edge-aware
    Shepard interpolation, computed on a grid of at most ``grid`` px and upsampled); where the
    weights sum to far less than ``reach`` the prediction stays. ``edges``: d is the geodesic
    distance over the gray, each step's length grown by the gray's gradient there
    (``stages.processors.edge_distance``), so a point's colour stops at strong edges. The
    defaults were chosen on held-out training photos (benchmarks/hints.py --help)."""
    h, w = gray.shape
    s = min(1.0, grid / max(h, w))
    gh, gw = max(1, round(h * s)), max(1, round(w * s))
    g = torch.from_numpy(cv2.resize(gray, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float32))
    yy, xx = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
    lab = rgb_to_lab(torch.from_numpy(hints.colours.T.copy()).float().div(255)[None, :, :, None])[0, 1:, :, 0]
    num, den = torch.zeros(2, gh, gw), torch.full((gh, gw), reach)
    for (px, py), target in zip(hints.points.tolist(), lab.T):
        x, y = int(round(px)), int(round(py))
        if not (0 <= x < w and 0 <= y < h):  # as ``Hints.render``: a point off the image counts nowhere
            continue
        gx, gy = min(int(x * s), gw - 1), min(int(y * s), gh - 1)
        d2 = (torch.from_numpy(edge_distance(g.numpy(), gx, gy)) ** 2 if edges
              else (xx - gx) ** 2 + (yy - gy) ** 2)
        wgt = torch.exp(-d2 / (2 * (spread * gw) ** 2) - (g - float(gray[y, x])) ** 2 / (2 * tone ** 2))
        num += wgt * (target - ab[:, y, x].float().cpu()).view(2, 1, 1)
        den += wgt
    fix = (num / den)[None]
    if (gh, gw) != (h, w):
        fix = F.interpolate(fix, size=(h, w), mode="bilinear", align_corners=False)
    return ab.float() + fix[0].to(ab.device)


def _ring_inside(ab: torch.Tensor, mask: np.ndarray, share: float, radius: int = 5) -> torch.Tensor:
    """(2,H,W) ab whose masked pixels take ``share`` of the colour Telea carries in from around them."""
    a = ab.float().cpu().numpy()
    # OpenCV's Telea reads past the border of a float image a few pixels high (NaNs from whatever
    # memory lies there): give it a replicated border of ``radius`` px, and keep what it returns finite.
    pad = lambda x, kind: cv2.copyMakeBorder(x, radius, radius, radius, radius, kind)  # noqa: E731
    m8 = pad(mask.astype(np.uint8), cv2.BORDER_CONSTANT)
    inner = np.s_[radius:radius + mask.shape[0], radius:radius + mask.shape[1]]
    ring = np.stack([cv2.inpaint(pad(np.ascontiguousarray(c), cv2.BORDER_REPLICATE), m8, radius,
                                 cv2.INPAINT_TELEA)[inner] for c in a])
    ring = np.nan_to_num(ring, nan=0.0, posinf=0.0, neginf=0.0)
    out = np.where(mask[None], share * ring + (1 - share) * a, a)
    return torch.from_numpy(out.astype(np.float32)).to(ab.device)


def _scale_inside(ab: torch.Tensor, mask: np.ndarray, factor: float) -> torch.Tensor:
    """(2,H,W) ab times ``factor`` where the (H,W) mask is set (in place, within its bounding box)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows):
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        inside = torch.from_numpy(np.ascontiguousarray(mask[box[1:]])).to(ab.device)
        ab[box] = torch.where(inside, ab[box] * factor, ab[box])
    return ab
