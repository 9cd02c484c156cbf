import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2lab

from pipeline.color import combine_luma, gray_to_lightness, lab_to_rgb, pil_gray, rgb_to_lab


def test_pil_gray_matches_pillow_exactly(rng):
    a = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    assert np.array_equal(pil_gray(a), np.asarray(Image.fromarray(a).convert("L")))
    # every value of every channel, one at a time
    ramp = np.zeros((256, 3, 3), np.uint8)
    for c in range(3):
        ramp[:, c, c] = np.arange(256)
    assert np.array_equal(pil_gray(ramp), np.asarray(Image.fromarray(ramp).convert("L")))


def test_lab_round_trip_and_matches_skimage(rng):
    x = torch.from_numpy(rng.random((2, 3, 16, 16), dtype=np.float32))
    lab = rgb_to_lab(x)
    assert torch.allclose(lab_to_rgb(lab), x, atol=1e-4)
    ref = rgb2lab(x[0].permute(1, 2, 0).numpy())
    assert np.abs(lab[0].permute(1, 2, 0).numpy() - ref).max() < 0.05


def test_gray_to_lightness_is_neutral_L():
    g = torch.linspace(0, 1, 11).view(1, 1, 1, 11)
    lab = rgb_to_lab(g.expand(1, 3, 1, 11))
    assert torch.allclose(gray_to_lightness(g)[0, 0], lab[0, 0], atol=1e-3)
    assert lab[:, 1:].abs().max() < 1e-2


def test_combine_luma_keeps_gray_for_wild_colours(rng):
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    colour = rng.uniform(-100, 400, (64, 64, 3)).astype(np.float32)  # far out of gamut
    out = combine_luma(gray, colour)
    lum = np.asarray(Image.fromarray(out).convert("L")).astype(int)
    diff = np.abs(lum - gray.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() >= 0.99
    # colour survives: most pixels are not gray
    assert (out.max(-1).astype(int) - out.min(-1)).mean() > 20


def test_combine_luma_of_neutral_is_the_gray(rng):
    gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    out = combine_luma(gray, np.repeat(gray[..., None], 3, -1).astype(np.float32) + 30)
    assert np.array_equal(out, np.repeat(gray[..., None], 3, -1))


def test_gray_ab_to_rgb_is_lab_to_rgb_of_the_gray_lightness():
    from pipeline.color import gray_ab_to_rgb, gray_to_lightness, lab_to_rgb
    g = torch.rand(2, 1, 16, 16)
    ab = (torch.rand(2, 2, 16, 16) - 0.5) * 160
    ref = lab_to_rgb(torch.cat([gray_to_lightness(g), ab], 1), clip=False)
    assert torch.allclose(gray_ab_to_rgb(g, ab), ref, atol=1e-5)


def test_gray8_ab_to_rgb8_is_combine_of_gray_ab_to_rgb(rng):
    from pipeline.color import gray8_ab_to_rgb8, gray_ab_to_rgb
    g8 = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    ab = (torch.rand(2, 48, 40) - 0.5) * 160
    ref = combine_luma(g8, gray_ab_to_rgb(torch.from_numpy(g8)[None, None] / 255, ab[None])[0]
                       .permute(1, 2, 0).numpy() * 255)
    out = gray8_ab_to_rgb8(g8, ab)
    assert out.dtype == np.uint8 and out.shape == (48, 40, 3) and out.flags.c_contiguous
    assert np.array_equal(gray8_ab_to_rgb8(g8, ab, block=100), out)  # bands of 2 rows: the same
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005
    lum = np.asarray(Image.fromarray(out).convert("L")).astype(int)
    assert np.abs(lum - g8).max() <= 1
