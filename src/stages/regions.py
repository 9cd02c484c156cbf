"""Connected regions of (H,W) bool masks: the detector's post-processing and the damage module
both use these (OpenCV, several times faster than scipy.ndimage)."""
from __future__ import annotations

import cv2
import numpy as np


def label4(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of an (H,W) bool array: ``(labels int32, count)`` with 0 for
    False, like ``scipy.ndimage.label`` (numbering may differ), via OpenCV (~2x faster)."""
    n, lab = cv2.connectedComponents(np.ascontiguousarray(mask, np.uint8), connectivity=4, ltype=cv2.CV_32S)
    return lab, n - 1


def touching(mask: np.ndarray, seeds: np.ndarray, connectivity: int = 4) -> np.ndarray:
    """The components of an (H,W) bool ``mask`` (4- or 8-connected) that hold a ``seeds`` pixel."""
    n, lab = cv2.connectedComponents(np.ascontiguousarray(mask, np.uint8), connectivity=connectivity,
                                     ltype=cv2.CV_32S)
    keep = np.zeros(n, bool)
    keep[lab[seeds & mask]] = True
    keep[0] = False
    return keep[lab]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H,W) bool -> (H,W) bool with every hole filled; the same result as
    ``scipy.ndimage.binary_fill_holes`` (4-connected background), ~20x faster: only the mask's
    bounding box is labelled, and background components touching its border are not holes."""
    mask = np.asarray(mask, bool)
    ys = np.flatnonzero(mask.any(1))
    if len(ys) == 0:
        return mask.copy()
    xs = np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    box = np.pad(~mask[y0:y1, x0:x1], 1, constant_values=True)
    lab, _ = label4(box)
    out = mask.copy()
    out[y0:y1, x0:x1] = (lab != lab[0, 0])[1:-1, 1:-1]
    return out


def line_share(mask: np.ndarray, elongation: float = 6.0) -> float:
    """Share of an (H,W) bool mask's pixels in long thin regions (8-connected components whose
    skeleton length² / area, their length over their mean width, is at least ``elongation``):
    ~1 for cracks and creases, ~0 for round spots and speckle. 0.0 for an empty mask."""
    from skimage.morphology import skeletonize
    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    area = np.bincount(lab.ravel(), minlength=n).astype(np.float64)
    length = np.bincount(lab[skeletonize(mask)], minlength=n).astype(np.float64)
    line = length ** 2 >= elongation * area
    line[0] = False
    return float(area[line].sum() / area[1:].sum())
