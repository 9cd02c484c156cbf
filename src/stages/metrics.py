"""The DACON 236420 score, computed the way the organizers compute it, plus IoU/F1 and PSNR.

score = 0.2·S + 0.4·M + 0.4·C where
- S: ``skimage.metrics.structural_similarity`` of the RGB uint8 images
  (``channel_axis=-1``, ``data_range=pred.max() - pred.min()``);
- M: the same call on the damaged pixels only, an (N,3) array (data_range from the whole pred);
- C: ``cv2.compareHist(HISTCMP_CORREL)`` of 180-bin hue histograms (OpenCV HSV from RGB),
  each ``cv2.normalize``-d.
"""
from __future__ import annotations

import cv2
import numpy as np

WEIGHTS = {"S": 0.2, "M": 0.4, "C": 0.4}


def hue_histogram(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) or (N,3) uint8 RGB -> (180,1) float32 hue histogram, L2-normalised like cv2."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = rgb[None]
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0], None, [180], [0, 180])
    cv2.normalize(hist, hist)
    return hist


def hue_correlation(gt: np.ndarray, pred: np.ndarray) -> float:
    """The C term: correlation of the hue histograms of two uint8 RGB images."""
    return float(cv2.compareHist(hue_histogram(gt), hue_histogram(pred), cv2.HISTCMP_CORREL))


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    n = min(a.shape[:-1])
    win = min(7, n if n % 2 else n - 1)
    if win < 3:  # too few pixels for any SSIM window: fall back to exact equality
        return float(np.array_equal(a, b))
    data_range = data_range if data_range > 0 else 255.0  # a constant pred would divide by 0
    from skimage.metrics import structural_similarity  # (scipy: 0.2 s of a restore's start-up, never used there)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=data_range, win_size=win))


def score(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> dict:
    """Competition score of one pair. gt, pred: (H,W,3) uint8 RGB; mask: (H,W), nonzero = damaged.

    Returns ``{"S", "M", "C", "score"}``. Identical to the organizers' formula wherever theirs is
    defined (regions of at least 7 pixels, non-constant prediction).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3 or gt.shape[-1] != 3:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must both be (H,W,3)")
    mask = np.asarray(mask) > 0
    if mask.shape != gt.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the images {gt.shape[:2]}")
    dr = float(pred.max()) - float(pred.min())
    s = _ssim(gt, pred, dr)
    m = _ssim(gt[mask], pred[mask], dr) if mask.any() else 1.0
    c = hue_correlation(gt, pred)
    return {"S": s, "M": m, "C": c, "score": WEIGHTS["S"] * s + WEIGHTS["M"] * m + WEIGHTS["C"] * c}


def mask_iou_f1(true: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """IoU and F1 (Dice) of two boolean masks; both empty counts as a perfect match."""
    t, p = np.asarray(true, bool), np.asarray(pred, bool)
    inter = np.logical_and(t, p).sum()
    union = np.logical_or(t, p).sum()
    if union == 0:
        return 1.0, 1.0
    return float(inter / union), float(2 * inter / (t.sum() + p.sum()))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical inputs)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))
