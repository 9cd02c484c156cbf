"""The DACON 236420 score and mask/PSNR metrics (re-exported from ``stages.metrics``, where the
stages' validation metrics use them)."""
from stages.metrics import hue_correlation, hue_histogram, mask_iou_f1, psnr, score

__all__ = ["hue_correlation", "hue_histogram", "mask_iou_f1", "psnr", "score"]
