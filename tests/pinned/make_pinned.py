"""Re-pin the shipped demo's restorations (run only when the shipped weights or a default
inference setting change; kodim08 was re-pinned for ``inpaint.thin``, the Telea fill of a hole's
thin tips, 2026-12-04; all three for ``inpaint.window_step``, the square window, the same day):

    python tests/pinned/make_pinned.py

Writes, for 3 bundled Kodak crops with seeded competition damage, the input and what
``Pipeline.load("demo", backend="torch", precision="fp32")`` restores (mask, inpainted gray,
colour) as PNGs next to this file; ``tests/test_pinned.py`` compares against them.
"""
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLES = ("kodim03.jpg", "kodim08.jpg", "kodim23.jpg")


def inputs():
    """[(name, (H,W) uint8 damaged gray)], deterministic."""
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    assets = Path(__import__("pipeline").__file__).parent / "assets" / "samples"
    out = []
    for i, name in enumerate(SAMPLES):
        rgb = np.asarray(Image.open(assets / name).convert("RGB").resize((192, 128), Image.BILINEAR))
        gray = apply_damage(pil_gray(rgb), random_damage(128, 192, np.random.default_rng(100 + i)))
        out.append((Path(name).stem, gray))
    return out


def restore_all():
    from pipeline import Pipeline
    pipe = Pipeline.load("demo", backend="torch", precision="fp32")
    return [(name, gray, pipe.restore(gray, return_intermediates=True)) for name, gray in inputs()]


if __name__ == "__main__":
    for name, gray, r in restore_all():
        Image.fromarray(gray).save(HERE / f"{name}_input.png")
        r.mask.save(HERE / f"{name}_mask.png")
        r.gray.save(HERE / f"{name}_gray.png")
        r.image.save(HERE / f"{name}_image.png")
    print(f"pinned {len(SAMPLES)} restorations in {HERE}")
