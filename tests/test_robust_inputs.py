"""Awkward inputs: EXIF rotation, decompression bombs, and a property test over sizes, modes, masks."""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.io import ImageError, to_gray


def test_exif_rotated_jpeg_is_read_as_displayed(tmp_path):
    a = np.zeros((20, 40), np.uint8)
    a[:, :20] = 200  # left half bright
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    g = to_gray(tmp_path / "r.jpg")
    assert g.shape == (40, 20)              # displayed upright: portrait
    assert g[:20].mean() > 150 and g[20:].mean() < 50


def test_decompression_bomb_is_one_clear_line_with_an_override(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match=r"big.png: image too large .*--max-pixels"):
        to_gray(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert to_gray(tmp_path / "big.png").shape == (64, 64)


@pytest.mark.slow  # runs the command in a new process
def test_restore_cli_max_pixels_override(tmp_path, tiny_pipeline, monkeypatch, capsys):
    from pipeline.restore import main
    tiny_pipeline.save(tmp_path / "p")
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)  # restored after the test, as --max-pixels sets it
    base = [str(tmp_path / "big.png"), "--checkpoint", str(tmp_path / "p"), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err
    assert "image too large" in err and "Traceback" not in err
    assert main(base + ["--out", str(tmp_path / "o2"), "--max-pixels", "200000"]) == 0
    assert Image.open(tmp_path / "o2" / "big.png").size == (300, 300)


MODES = ["L", "RGB", "RGBA", "LA", "P", "I;16", "CMYK", "1"]


@pytest.mark.slow  # restores many generated images
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 70), w=st.integers(1, 70), mode=st.sampled_from(MODES), seed=st.integers(0, 2 ** 16),
       use_mask=st.booleans())
@example(h=1, w=34, mode="RGB", seed=0, use_mask=True)  # a colour photo one pixel high: Telea once gave NaN colour
def test_restore_property_size_mode_and_unchanged_outside(tiny_pipeline, h, w, mode, seed, use_mask):
    r = np.random.default_rng(seed)
    rgb = Image.fromarray(r.integers(0, 256, (h, w, 3), dtype=np.uint8))
    img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257) if mode == "I;16" \
        else rgb.convert(mode)
    mask = (r.random((h, w)) < r.random()) if use_mask else None
    out = tiny_pipeline.restore(img, mask=mask, return_intermediates=True)
    assert out.image.mode == "RGB" and out.image.size == (w, h)
    assert out.mask.size == (w, h) and out.gray.size == (w, h)
    gray, used, filled = to_gray(img), np.asarray(out.mask) > 0, np.asarray(out.gray)
    if mask is not None:
        assert np.array_equal(used, mask)
    assert np.array_equal(filled[~used], gray[~used])
    assert np.abs(np.asarray(out.image.convert("L")).astype(int) - filled).max() <= 1


def test_save_png_is_lossless_and_atomic(tmp_path):
    from pipeline.io import save_png
    rng = np.random.default_rng(0)
    for mode, shape in (("RGB", (37, 53, 3)), ("L", (37, 53))):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        save_png(Image.fromarray(a, mode), tmp_path / f"{mode}.png")
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{mode}.png")), a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L.png", "RGB.png"]  # no temp files left


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGB", "RGBA", "I;16"])
def test_written_pngs_read_back_as_the_same_pixels_in_every_mode(mode):
    import io

    from pipeline.io import png_bytes
    arr = np.random.default_rng(3).integers(0, 256, (37, 53, 4), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA").convert(mode) if mode != "I;16" else \
        Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    back = Image.open(io.BytesIO(png_bytes(img)))
    assert back.size == img.size and np.array_equal(np.asarray(back), np.asarray(img))
