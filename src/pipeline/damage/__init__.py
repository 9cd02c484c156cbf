"""Synthetic damage, and the rule that recovers a competition mask from a pair.

- ``shapes``: competition style (``random_damage``): one shape per image (rectangle, ellipse,
  triangle, random polygon, including spiky, self-intersecting ones) filled with one constant gray
  in [0, 100], 0.9-16 % of the image; ``rule_mask`` and ``mask_from_pair``.
- ``kinds``: old-photo damage kinds by name (``KINDS``, ``register_kind``): scratches, ruler-straight
  scratches, branching cracks, shattered emulsion, dust and spots, crack webs, creases, flakes,
  torn edges; drawn with the paths and strokes of ``strokes``.
- ``prints``: ``real_damage`` (one to three kinds composited as a soft layer), ``old_print`` (the
  ageing of a print), ``add_grain``, ``scan`` / ``scan_pair`` (the scan that sees it all).
- ``negatives``: ``add_fine_detail``, the photo's own fine detail: hard negatives for a detector.

Everything is driven by a ``numpy.random.Generator``, so it is reproducible.
"""
from stages.regions import fill_holes, label4  # noqa: F401  (re-exported: pipeline.damage.fill_holes)

from .kinds import KINDS, _layer, register_kind
from .negatives import _dots, _mesh, _outlines, add_fine_detail
from .prints import (LINE_KINDS, OLD_PRINT_KINDS, REAL_KINDS, RealDamage, add_grain, apply_real_damage, old_print,
                     real_damage, scan, scan_pair)
from .shapes import SHAPES, Damage, add_touching_region, apply_damage, mask_from_pair, random_damage, rule_mask
from .strokes import _edge_start, _jagged, _stroke, _walk

__all__ = ["KINDS", "LINE_KINDS", "OLD_PRINT_KINDS", "REAL_KINDS", "SHAPES", "Damage", "RealDamage",
           "add_fine_detail", "add_grain", "add_touching_region", "apply_damage", "apply_real_damage",
           "fill_holes", "label4", "mask_from_pair", "old_print", "random_damage", "real_damage",
           "register_kind", "rule_mask", "scan", "scan_pair", "_dots", "_edge_start", "_jagged", "_layer",
           "_mesh", "_outlines", "_stroke", "_walk"]
