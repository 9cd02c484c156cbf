"""Re-pin the shipped demo's restorations (run only when the shipped weights or a default
inference setting of the ``competition`` preset change):

    python tests/pinned/make_pinned.py

Writes, for each case, the input and what ``Pipeline.load("demo", backend="torch",
precision="fp32")`` restores with the ``competition`` preset (mask, inpainted gray, colour) as
PNGs next to this file; ``tests/test_pinned.py`` compares against them. The cases: 3 bundled Kodak
crops with seeded competition damage (``SAMPLES``), and one each of the other inputs a user hands
in (``CASES``): an everyday gray photo, a colour photo with a given mask, a sepia-toned print, an
old print, a photo with colour hints, one with a reference, and a 1x1 image.
"""
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLES = ("kodim03.jpg", "kodim08.jpg", "kodim23.jpg")
CASES = ("gray_photo", "colour_photo", "toned_print", "old_print", "hints", "reference", "tiny")
HINTS = [(40, 30, "#b03030"), (150, 90, (40, 90, 160))]


def _asset(name: str, size=(192, 128)) -> np.ndarray:
    assets = Path(__import__("pipeline").__file__).parent / "assets" / "samples"
    return np.asarray(Image.open(assets / name).convert("RGB").resize(size, Image.BILINEAR))


def inputs():
    """[(name, (H,W) uint8 damaged gray)], deterministic: the competition samples."""
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    out = []
    for i, name in enumerate(SAMPLES):
        gray = apply_damage(pil_gray(_asset(name)), random_damage(128, 192, np.random.default_rng(100 + i)))
        out.append((Path(name).stem, gray))
    return out


def sepia(gray: np.ndarray) -> np.ndarray:
    """(H,W) uint8 gray -> (H,W,3) uint8 sepia-toned print (one tint per gray level)."""
    g = gray.astype(np.float32)[..., None] / 255
    tint = np.array([1.0, 0.86, 0.68], np.float32)
    return np.clip(np.rint(255 * (g * tint + (1 - tint) * g ** 2)), 0, 255).astype(np.uint8)


def cases():
    """[(name, image array, restore keyword arguments)], deterministic: the other inputs."""
    from pipeline.color import pil_gray
    from pipeline.damage import apply_real_damage, old_print, real_damage
    rng = np.random.default_rng(7)
    gray = pil_gray(_asset("kodim05.jpg"))
    colour = _asset("kodim07.jpg").copy()
    hole = np.zeros((128, 192), np.uint8)
    hole[50:62, 30:150] = 255
    colour[hole > 0] = 240
    toned = sepia(pil_gray(_asset("kodim19.jpg")))
    toned[:, 95:98] = 250  # a bright crack across the print
    aged = old_print(pil_gray(_asset("kodim24.jpg")), rng)
    aged, _ = apply_real_damage(aged, real_damage(128, 192, rng, worn=True), rng)
    ref_gray = inputs()[1][1]
    return [("gray_photo", gray, {}),
            ("colour_photo", colour, {"mask": hole}),
            ("toned_print", toned, {}),
            ("old_print", aged, {}),
            ("hints", inputs()[0][1], {"hints": HINTS}),
            ("reference", ref_gray, {"references": "REFERENCE"}),
            ("tiny", np.full((1, 1), 77, np.uint8), {})]


def restore_all(pipe=None, **options):
    """[(name, input, Restoration)] of every sample and case, with ``options`` (default: the
    ``competition`` preset)."""
    from pipeline import Pipeline
    pipe = pipe or Pipeline.load("demo", backend="torch", precision="fp32")
    options = options or {"preset": "competition"}
    out = [(name, gray, pipe.restore(gray, return_intermediates=True, **options)) for name, gray in inputs()]
    with tempfile.TemporaryDirectory() as refs:
        Image.fromarray(_asset("kodim08.jpg")).save(Path(refs) / "kodim08.png")
        for name, img, kw in cases():
            kw = {k: (refs if isinstance(v, str) and v == "REFERENCE" else v) for k, v in kw.items()}
            out.append((name, img, pipe.restore(img, return_intermediates=True, **{**kw, **options})))
    return out


if __name__ == "__main__":
    for name, img, r in restore_all():
        Image.fromarray(img).save(HERE / f"{name}_input.png")
        r.mask.save(HERE / f"{name}_mask.png")
        r.gray.save(HERE / f"{name}_gray.png")
        r.image.save(HERE / f"{name}_image.png")
    print(f"pinned {len(SAMPLES) + len(CASES)} restorations in {HERE}")
