"""The metric's hue term as a loss: soft (differentiable) and binned hue histograms of RGB images
and 1 - the correlation of a prediction's and the truth's (``Colorizer(hue_weight=...)``)."""
from __future__ import annotations

import math

import torch

HUE_BINS = 180


def soft_hue_histogram(rgb: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,1] -> (B,180) hue histogram, differentiable.

    The hue is OpenCV's HSV hue in [0,180) (the hexagonal formula, as ``cv2.COLOR_RGB2HSV`` on
    uint8); each pixel adds a circular Gaussian bump of ``sigma`` bins instead of a hard count.
    """
    h = _hue(rgb)
    centers = torch.arange(HUE_BINS, device=rgb.device, dtype=h.dtype) + 0.5
    dist = torch.remainder(h.unsqueeze(-1) - centers + HUE_BINS / 2, HUE_BINS) - HUE_BINS / 2
    return torch.exp(-0.5 * (dist / sigma) ** 2).sum(1)


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,1] -> (B,H*W) OpenCV HSV hue in [0,180)."""
    rgb = rgb.float().clamp(0, 1).flatten(2)
    r, g, b = rgb.unbind(1)
    mx, mn = rgb.max(1).values, rgb.min(1).values
    # 1/255: below that the uint8 image is gray and the hue is arbitrary; the clamp keeps the
    # gradient of near-gray pixels bounded.
    d = (mx - mn).clamp(min=1 / 255)
    return torch.where(mx == r, torch.remainder((g - b) / d, 6),
                       torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 30


@torch.no_grad()
def binned_hue_histogram(rgb: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """``soft_hue_histogram`` without a gradient, in O(pixels): hard counts per bin, then the
    same circular Gaussian (each hue taken at its bin's centre). For large targets."""
    h = _hue(rgb)
    counts = torch.zeros(h.shape[0], HUE_BINS, device=h.device, dtype=h.dtype)
    counts.scatter_add_(1, h.long().clamp_(0, HUE_BINS - 1), torch.ones_like(h))
    r = 4 * int(math.ceil(sigma))  # the kernel in Python numbers: no device->host read
    return sum(math.exp(-0.5 * (o / sigma) ** 2) * torch.roll(counts, o, 1) for o in range(-r, r + 1))


def hue_correlation_loss(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of the soft hue histograms (the metric's C term), batch mean.
    pred_rgb, true_rgb: (B,3,H,W) in [0,1] (sizes may differ); only ``pred_rgb`` gets a gradient."""
    hp = soft_hue_histogram(pred_rgb)
    with torch.no_grad():
        big = true_rgb.shape[-2] * true_rgb.shape[-1] > 4 * pred_rgb.shape[-2] * pred_rgb.shape[-1]
        ht = binned_hue_histogram(true_rgb) if big else soft_hue_histogram(true_rgb)
    hp, ht = hp - hp.mean(1, keepdim=True), ht - ht.mean(1, keepdim=True)
    corr = (hp * ht).sum(1) / (hp.norm(dim=1) * ht.norm(dim=1)).clamp(min=1e-8)
    return 1 - corr.mean()
