"""Pre- and post-processing around the networks: plain array code, no weights. Each stage's
inference method calls its own (``MaskDetector.detect``, ``Inpainter.inpaint``); the training
data workers call ``TeleaPrefill`` too. A dataclass's field defaults are those settings' defaults
(the stage constructors refer to them).

- ``MaskProcessor``: a thresholded damage mask -> the final mask (snap to a constant fill, keep
  one region, fill holes).
- ``TeleaPrefill``: OpenCV Telea inpainting of the hole, what the inpainter's network corrects.
- ``Reference``: another photo of the scene, aligned to the input (``pipeline.references`` finds
  and verifies it): the inpainter takes the hole's gray from it, the colorizer its colour.
- ``own_colour``: whether a photo has colour of its own (to keep) or is gray or toned (to colour).
- ``Hints``: colours a person knows (points), for a colorizer with hint channels;
  ``edge_distance``: how far a point's colour reaches, stopped by strong edges.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .color import rgb_to_lab
from .regions import fill_holes, label4

KINDS = ("auto", "shape", "scratches")  # the damage a detector looks for: the one list (CLI, app, stages)


@dataclass(frozen=True)
class MaskProcessor:
    """(H,W) bool mask (+ (H,W) uint8 gray) -> (H,W) bool, by the kind of damage.

    ``shape`` (a competition input: one shape of one constant gray): ``refine`` snaps the mask to
    the constant fill (when most predicted pixels share one gray in [0, ``max_fill``], the mask
    becomes the connected regions of that gray touching the prediction; a region leaking far
    beyond it is clipped to ``refine_band`` px), ``keep_largest`` keeps one component and
    ``fill_holes`` fills it. ``scratches`` (an old photo: scratches, cracks, spots, tears):
    regions smaller than ``min_region`` px are dropped and the rest grown by 1 px (their soft
    edges). ``auto``: ``shape`` when the prediction covers a constant fill and at least
    ``min_shape`` of the image (the competition's shapes cover 0.9-16 %), else ``scratches``.
    """
    refine: bool = True
    refine_band: int = 6
    max_fill: int = 100
    keep_largest: bool = True
    fill_holes: bool = True
    kind: str = "shape"
    min_region: int = 0
    min_shape: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"damage kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def kind_of(self, mask: np.ndarray, gray: np.ndarray | None) -> str:
        """``shape`` or ``scratches``: what this mask of this gray is treated as."""
        if self.kind != "auto":
            return self.kind
        if gray is None or not mask.any():
            return "scratches"
        v, region = self.fill_region(mask, gray)
        return "shape" if v is not None and region.mean() >= self.min_shape else "scratches"

    def __call__(self, mask: np.ndarray, gray: np.ndarray | None = None, kind: str | None = None) -> np.ndarray:
        if (kind or self.kind_of(mask, gray)) == "scratches":
            return self._scratches(mask)
        pred = mask
        if self.refine and gray is not None and mask.any():
            mask = self.snap(mask, gray)  # before keep_largest: a fragmented prediction still
        if self.keep_largest and mask.any():  # names the whole fill region
            # a snapped spiky or self-intersecting polygon rasterizes as several pieces of the
            # fill: the pieces the network marked stay
            mask = _largest(mask, pred if mask is not pred else None)
        if self.fill_holes:
            mask = fill_holes(mask)
        return mask

    def _scratches(self, mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return mask
        if self.min_region > 1:
            lab, n = label4(mask)
            size = np.bincount(lab.ravel(), minlength=n + 1)
            keep = size >= self.min_region
            keep[0] = False
            mask = keep[lab]
        return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) if mask.any() else mask

    def constant_fill(self, mask: np.ndarray, gray: np.ndarray) -> int | None:
        """The gray most predicted pixels share, if it is a fill in [0, ``max_fill``] covering
        at least 60 % of them; else None."""
        counts = np.bincount(gray[mask], minlength=256)
        v = int(counts.argmax())
        return None if v > self.max_fill or counts[v] < 0.6 * mask.sum() else v

    def fill_region(self, mask: np.ndarray, gray: np.ndarray, tries: int = 4) -> tuple:
        """``(fill, region)``: the constant fill of the whole prediction, else of one of its
        ``tries`` largest components of at least a quarter of it (the network also marked
        something beside the shape); ``(None, mask)`` when there is none."""
        v = self.constant_fill(mask, gray)
        if v is not None:
            return v, mask
        lab, n = label4(mask)
        if n > 1:
            size = np.bincount(lab.ravel(), minlength=n + 1)
            size[0] = 0
            for k in np.argsort(size)[::-1][:min(tries, n)]:
                if size[k] < 0.25 * size.sum():
                    break
                part = lab == k
                v = self.constant_fill(part, gray)
                if v is not None:
                    return v, part
        return None, mask

    def snap(self, mask: np.ndarray, gray: np.ndarray) -> np.ndarray:
        """Snap a predicted mask to the constant fill it covers (see the class docstring)."""
        v, mask = self.fill_region(mask, gray)
        if v is None:
            return mask  # not a constant fill (textured damage): keep the network's mask
        # Components of the fill value touching the prediction are taken whole when most of
        # them lies near it or they are not much larger than it (the network under-segmented),
        # and clipped to a thin band when they
        # leak far away (the fill touches surroundings of the same gray).
        r = max(self.refine_band, 0.5 * np.sqrt(mask.sum()))
        near, band = _within(mask, r, self.refine_band)
        cand = gray == v
        lab, n = label4(cand)
        size = np.bincount(lab.ravel(), minlength=n + 1)
        touch = np.bincount(lab[mask & cand], minlength=n + 1) > 0
        inside = np.bincount(lab[near], minlength=n + 1)
        touch[0] = False
        whole = touch & ((inside >= 0.5 * size) | (size <= 3 * mask.sum()))
        part = touch & ~whole
        if not touch.any():
            return mask
        refined = fill_holes(whole[lab] | (part[lab] & band))
        inter = np.logical_and(refined, mask).sum()
        return refined if inter >= 0.5 * mask.sum() else mask


@dataclass(frozen=True)
class TeleaPrefill:
    """OpenCV Telea inpainting of the hole (``radius`` px): (B,1,H,W) gray in [0,1] + (B,1,H,W)
    mask -> (B,1,H,W) gray in [0,1] (uint8-exact), unchanged where nothing is masked.
    Also a training-sample transform: adds ``"prefilled"`` to a sample dict (in the data workers)."""
    radius: int = 3

    def __call__(self, gray: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g8 = (gray.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        m8 = (mask.detach().float() > 0.5).to(torch.uint8).cpu().numpy()
        out = np.stack([cv2.inpaint(np.ascontiguousarray(g[0]), np.ascontiguousarray(m[0]), self.radius,
                                    cv2.INPAINT_TELEA)[None] if m.any() else g
                        for g, m in zip(g8, m8)])
        return torch.from_numpy(out).to(gray.device, gray.dtype) / 255

    def sample(self, item: dict) -> dict:
        """A training sample (``gray``, ``mask``: (1,H,W)) + ``prefilled`` (1,H,W)."""
        return {**item, "prefilled": self(item["gray"][None], item["mask"][None])[0]}


@dataclass(frozen=True)
class Reference:
    """A verified reference aligned to an (H,W) input: ``gray`` (H,W) uint8, tone-matched to the
    input; ``rgb`` (H,W,3) uint8, its colour; ``valid`` (H,W) bool, where it covers the input;
    ``weight`` (H,W) float32 in [0,1], how much its colour counts (1 inside ``valid``, falling to
    0 over ``feather`` px at its edge, so its colour joins the predicted one without a seam)."""
    gray: np.ndarray
    rgb: np.ndarray
    valid: np.ndarray
    feather: int = 8
    exact: bool = False  # the input's own colour (keep_colour): its pixels are kept as they are where valid
    source: str = ""     # where it came from (a reference photo's path), for the restore's report

    @property
    def weight(self) -> np.ndarray:
        if self.valid.all() or self.feather <= 0:
            return self.valid.astype(np.float32)
        dist = cv2.distanceTransform(self.valid.astype(np.uint8), cv2.DIST_L2, 3)
        return np.clip(dist / self.feather, 0, 1).astype(np.float32)


def own_colour(rgb: np.ndarray, size: int = 64, threshold: float = 3.5) -> bool:
    """Whether an (H,W,3) uint8 photo has colour of its own, not only a tone: the 90th percentile
    of its ab chroma left after taking away each gray level's mean ab (a gray, sepia or otherwise
    toned print has one colour per gray level), at most ``size`` px wide so that grain and JPEG
    noise average out. ``threshold`` (Lab units): measured on 325 colour photos and their toned
    gray copies (research/benchmarks/own_colour.py): 97 % of the colour photos kept, 99 % of the toned recoloured."""
    s = size / max(rgb.shape[:2])
    if s < 1:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    level = np.clip((lab[:, 0] * 0.16).astype(int), 0, 15)
    count = np.bincount(level, minlength=16).clip(1)
    mean = np.stack([np.bincount(level, weights=lab[:, c], minlength=16) / count for c in (1, 2)], 1)
    return bool(np.percentile(np.linalg.norm(lab[:, 1:] - mean[level], axis=1), 90) >= threshold)


def edge_distance(gray: np.ndarray, x: int, y: int, edge: float = 12.0) -> np.ndarray:
    """(H,W) float32 gray (0-255) -> (H,W) float32 geodesic distance in px from pixel (x, y), each
    step's length times 1 + (gradient / ``edge``)² (gradient: Sobel of the lightly blurred gray, in
    levels per px). Across a strong edge (60 levels) a step counts ~26 px, within texture (5
    levels) ~1.2: what a hint's colour spreads by, so it stays on its object."""
    from skimage.graph import MCP_Geometric
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 0.8)
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) / 8
    dist, _ = MCP_Geometric(1 + (grad / edge) ** 2).find_costs([(int(y), int(x))])
    return dist.astype(np.float32)


def stretch_contrast(gray: np.ndarray, exclude: np.ndarray | None = None, low: float = 0.5, high: float = 99.5,
                     below: int = 200) -> np.ndarray:
    """A faded print's gray with its tones spread again: (H,W) uint8 -> (H,W) uint8, the
    ``low``..``high`` percentiles (of the pixels not in ``exclude``, e.g. the damage) mapped
    linearly to 0..255. Only a gray whose range has shrunk below ``below`` levels changes; any
    other comes back unchanged (a copy)."""
    vals = gray[~exclude] if exclude is not None and (~exclude).any() else gray.ravel()
    lo, hi = np.percentile(vals, [low, high]) if vals.size else (0.0, 255.0)
    if hi - lo >= below or hi - lo < 1:
        return gray.copy()
    lut = np.clip(np.rint((np.arange(256) - lo) * 255 / (hi - lo)), 0, 255).astype(np.uint8)
    return lut[gray]


@dataclass(frozen=True)
class Hints:
    """Known colours of an image: ``points`` (N,2) float x, y in pixels of the image (x to the
    right, y down); ``colours`` (N,3) uint8 RGB, the colour at each point (its a, b count; its
    lightness is the photo's). ``radius``: each point covers a square of 2·radius+1 px."""
    points: np.ndarray
    colours: np.ndarray
    radius: int = 2

    @classmethod
    def of(cls, hints) -> "Hints | None":
        """A ``Hints``, or None for no hints, from itself or an iterable of ``(x, y, colour)`` with
        colour an (r, g, b) of 0-255 or ``"#rrggbb"``; raises ValueError naming a bad item."""
        if hints is None or isinstance(hints, Hints):
            return hints
        pts, cols = [], []
        for item in hints:
            try:
                x, y, c = item
                c = tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) if isinstance(c, str) and len(c) == 7 \
                    and c[0] == "#" else tuple(int(v) for v in c)
                if len(c) != 3 or not all(0 <= v <= 255 for v in c):
                    raise ValueError
                pts.append((float(x), float(y)))
                cols.append(c)
            except (TypeError, ValueError):
                raise ValueError(f"colour hint {item!r}: expected (x, y, colour) with colour (r, g, b) in "
                                 "0-255 or '#rrggbb'") from None
        if not pts:
            return None
        return cls(np.array(pts, np.float32), np.array(cols, np.uint8))

    def render(self, h: int, w: int) -> torch.Tensor:
        """(3,H,W) float32: a/110, b/110 of each point's colour on its square, and 1 there (the
        hint mask); 0 elsewhere. Points outside the image are dropped."""
        out = np.zeros((3, h, w), np.float32)
        lab = rgb_to_lab(torch.from_numpy(self.colours.T.copy()).float().div(255)[None, :, :, None])[0, :, :, 0].T
        r = self.radius
        for (x, y), (_, a, b) in zip(np.round(self.points).astype(int), lab.tolist()):
            if 0 <= x < w and 0 <= y < h:
                box = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
                out[0][box], out[1][box], out[2][box] = a / 110, b / 110, 1
        return torch.from_numpy(out)


def _largest(mask: np.ndarray, pred: np.ndarray | None = None) -> np.ndarray:
    """The largest component of ``mask``, and those half covered by ``pred`` and at least 1 %
    of its size (a speck of the same gray beside the shape is not a piece of it)."""
    lab, n = label4(mask)
    if n <= 1:
        return mask
    size = np.bincount(lab.ravel(), minlength=n + 1)
    keep = np.zeros(n + 1, bool)
    keep[size[1:].argmax() + 1] = True
    if pred is not None:
        keep |= (np.bincount(lab[pred & mask], minlength=n + 1) >= 0.5 * size) & (size >= 0.01 * size[1:].max())
    keep[0] = False
    return keep[lab]


def _within(mask: np.ndarray, *radii: float) -> list[np.ndarray]:
    """For each radius r, the (H,W) bool pixels within Euclidean distance r of ``mask`` (one
    distance transform over its bounding box grown by the largest r, not the whole image)."""
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    m = int(np.ceil(max(radii))) + 1
    y0, y1 = max(0, ys[0] - m), min(mask.shape[0], ys[-1] + 1 + m)
    x0, x1 = max(0, xs[0] - m), min(mask.shape[1], xs[-1] + 1 + m)
    # OpenCV's exact (DIST_MASK_PRECISE) Euclidean transform: the distance of each non-zero
    # pixel to the nearest zero one, ~10x faster than scipy's
    dist = cv2.distanceTransform((~mask[y0:y1, x0:x1]).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outs = []
    for r in radii:
        out = np.zeros_like(mask)
        out[y0:y1, x0:x1] = dist <= r
        outs.append(out)
    return outs
