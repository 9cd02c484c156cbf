"""Colour maths (re-exported from ``stages.color``, where the colorizer owns it)."""
from stages.color import (combine_luma, fp32, gray8_ab_to_rgb8, gray_ab_to_rgb, gray_to_lightness, lab_to_rgb,
                          pil_gray, rgb_to_lab)

__all__ = ["combine_luma", "fp32", "gray8_ab_to_rgb8", "gray_ab_to_rgb", "gray_to_lightness", "lab_to_rgb",
           "pil_gray", "rgb_to_lab"]
