"""Presets (``pipeline.policy``): ``competition`` for competition inputs, ``photo`` for people."""
import csv

import cv2

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import Pipeline
from pipeline.policy import competition_shape, decide_colour, PHOTO, COMPETITION, toned
from stages.colorize import _with_hints
from stages.processors import Hints
from tests.conftest import colourful


def _sepia(rgb, tint=(1.0, 0.86, 0.68)):
    g = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)[..., None] / 255
    t = np.array(tint, np.float32)
    return np.clip(np.rint(255 * (g * t + (1 - t) * g ** 2)), 0, 255).astype(np.uint8)


def _shape_input(h=64, w=80, fill=40):
    gray = np.asarray(Image.fromarray(colourful(h, w, 3)).convert("L")).copy()
    mask = np.zeros((h, w), bool)
    mask[20:34, 25:50] = True
    gray[mask] = fill
    return gray, mask


def _crack(h=64, w=80):
    mask = np.zeros((h, w), bool)
    mask[:, 38:41] = True
    return mask


def test_competition_shape_is_one_dark_gray_on_a_gray_image():
    gray, mask = _shape_input()
    assert competition_shape(gray, mask)
    assert not competition_shape(gray, mask, colour=np.zeros((*gray.shape, 3), np.uint8))  # a colour input
    assert not competition_shape(*_shape_input(fill=180))                 # brighter than the competition's fills
    noisy = gray.copy()
    noisy[mask] = np.random.default_rng(0).integers(0, 100, mask.sum())
    assert not competition_shape(noisy, mask)                             # not one gray
    tiny_mask = np.zeros_like(mask)
    tiny_mask[30, 30] = True
    assert not competition_shape(gray, tiny_mask)                         # under 0.5 % of the image
    assert not competition_shape(gray, np.zeros_like(mask))


def test_toned_prints_are_told_from_gray_and_colour_photos():
    rgb = colourful(96, 128, 1)
    gray3 = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, -1)
    assert toned(_sepia(rgb)) and toned(_sepia(rgb, (0.75, 0.9, 1.0)))     # sepia, cyanotype
    assert not toned(gray3)
    assert decide_colour(PHOTO, _sepia(rgb), None)[0] is not None
    assert decide_colour(COMPETITION, _sepia(rgb), None)[0] is None       # today's: coloured from its gray
    assert decide_colour(PHOTO, _sepia(rgb), False)[0] is None            # recolour asked for
    assert decide_colour(PHOTO, rgb, None)[0] is not None                 # a colour photo keeps its colour


def test_auto_picks_competition_for_a_shape_and_photo_otherwise(tiny_pipeline):
    gray, mask = _shape_input()
    r = tiny_pipeline.restore(gray, mask=mask, return_intermediates=True)
    assert r.report.preset == "competition" and "competition shape" in r.report.preset_why
    assert r.report.damage == "given" and r.report.reference is None
    plain = tiny_pipeline.restore(gray, mask=_crack(), return_intermediates=True)
    assert plain.report.preset == "photo"
    forced = tiny_pipeline.restore(gray, mask=mask, preset="photo", return_intermediates=True)
    assert forced.report.preset == "photo" and "asked" in forced.report.preset_why
    assert not np.array_equal(np.asarray(forced.image), np.asarray(r.image))


def test_a_toned_print_keeps_its_tone_outside_the_damage(tiny_pipeline):
    print_ = _sepia(colourful(64, 80, 5))
    hole = _crack()
    damaged = print_.copy()
    damaged[hole] = 250
    r = tiny_pipeline.restore(damaged, mask=hole, return_intermediates=True)
    out = np.asarray(r.image, np.int16)
    assert r.report.preset == "photo" and "tone" in r.report.colour
    assert np.abs(out - damaged)[~hole].max() <= 1                        # its own tone, unchanged
    assert np.abs(out - damaged)[hole].max() > 10                         # the crack repaired
    recoloured = np.asarray(tiny_pipeline.restore(damaged, mask=hole, keep_colour=False), np.int16)
    assert np.abs(recoloured - damaged)[~hole].max() > 2
    today = np.asarray(tiny_pipeline.restore(damaged, mask=hole, preset="competition"), np.int16)
    assert np.array_equal(today, np.asarray(tiny_pipeline.restore(damaged, mask=hole, keep_colour=False,
                                                                  preset="competition")))


def _ring_stats(rgb, hole):
    import cv2
    ring = cv2.dilate(hole.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool) & ~hole
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    c = np.hypot(lab[..., 1], lab[..., 2])
    return c[hole].mean(), c[ring].mean()


@pytest.mark.parametrize("kind", ["gray", "colour", "toned"])
def test_photo_hole_colour_continues_its_ring(tiny_pipeline, kind):
    rgb = colourful(64, 80, 7)
    img = {"gray": np.asarray(Image.fromarray(rgb).convert("L")), "colour": rgb, "toned": _sepia(rgb)}[kind].copy()
    hole = _crack()
    img[hole] = 235
    out = np.asarray(tiny_pipeline.restore(img, mask=hole, preset="photo"))
    hole_c, ring_c = _ring_stats(out, hole)
    assert abs(hole_c - ring_c) / max(ring_c, 5) <= 0.25, (hole_c, ring_c)


def test_a_hint_stops_at_a_strong_edge():
    gray = np.full((64, 64), 128, np.uint8)
    gray[:, 31:33] = 10                                                  # a dark bar between two walls
    ab = torch.zeros(2, 64, 64)
    hints = Hints.of([(26, 32, "#c02020")])
    near, across = (slice(28, 36), slice(24, 30)), (slice(28, 36), slice(34, 40))
    plain = _with_hints(ab, hints, gray, 0.15, 25.0)
    edged = _with_hints(ab, hints, gray, 0.15, 25.0, edges=True)
    chroma = lambda a, box: float(a[:, box[0], box[1]].norm(dim=0).mean())  # noqa: E731
    assert chroma(plain, across) > 0.5 * chroma(plain, near)              # without edges it leaks across
    assert chroma(edged, across) < 0.1 * chroma(edged, near)              # with them it stays
    assert chroma(edged, near) > 0.8 * chroma(plain, near)


def test_a_batch_of_mixed_presets_restores_each_as_alone(tiny_pipeline):
    gray, mask = _shape_input()
    crack = _crack()
    many = tiny_pipeline.restore_many([gray, gray], [mask, crack])
    assert [r.report.preset for r in many] == ["competition", "photo"]
    for r, m in zip(many, (mask, crack)):
        assert np.array_equal(np.asarray(r.image), np.asarray(tiny_pipeline.restore(gray, mask=m)))


def test_preset_is_checked_saved_and_loaded(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="preset must be one of auto, competition, photo, got 'sepia'"):
        tiny_pipeline.restore(np.zeros((8, 8), np.uint8), preset="sepia")
    tiny_pipeline.save(tmp_path / "p")
    pipe = Pipeline.load(tmp_path / "p", preset="photo")
    assert pipe.preset == "photo"
    gray, mask = _shape_input()
    assert pipe.restore(gray, mask=mask, return_intermediates=True).report.preset == "photo"
    pipe.save(tmp_path / "q")
    assert Pipeline.load(tmp_path / "q").preset == "photo"


def test_cli_preset_and_the_report_in_the_manifest(tiny_pipeline, tmp_path):
    from pipeline.restore import main
    gray, mask = _shape_input()
    Image.fromarray(gray).save(tmp_path / "in.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    tiny_pipeline.save(tmp_path / "pipe")
    for preset in ("auto", "photo"):
        assert main([str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--checkpoint",
                     str(tmp_path / "pipe"), "--out", str(tmp_path / preset), "--preset", preset,
                     "--no-progress"]) == 0
        row = next(csv.DictReader(open(tmp_path / preset / "manifest.csv")))
        assert row["preset"] == {"auto": "competition", "photo": "photo"}[preset]
        assert row["damage"] == "given" and row["colour"].startswith("colourised")


def test_a_click_selects_the_damage_it_lies_on_and_explain_says_so(tiny_pipeline, monkeypatch):
    from stages import MaskDetector
    gray = np.full((64, 64), 120, np.uint8)
    prob = np.zeros((64, 64), np.float32)
    prob[20, 5:60] = 0.4                                     # a crack the network is unsure of
    prob[45, 5:60] = 0.4                                     # and another, not clicked
    monkeypatch.setattr(MaskDetector, "scratch_probabilities", lambda self, g, tile=None: prob)
    m, (rule, why) = tiny_pipeline.detect(gray, "none", points=[(30, 21)], explain=True)
    assert rule == "points" and "1 click" in why
    assert m[20, 5:60].all() and not m[45].any()
    r = tiny_pipeline.restore(gray, damage="none", points=[(30, 21)], return_intermediates=True)
    assert r.report.damage == "points" and np.asarray(r.mask)[20, 30] == 255


def test_where_the_network_sees_nothing_a_click_traces_the_thin_line_in_the_image(tiny_pipeline, monkeypatch):
    from stages import MaskDetector
    rng = np.random.default_rng(0)
    gray = np.clip(128 + rng.normal(0, 4, (96, 96)), 0, 255).astype(np.uint8)
    yy = (20 + np.arange(96) * 0.4).astype(int)
    gray[yy, np.arange(96)] += 12                            # a faint crease, 12 levels over noise of 4
    gray[70:90, 10:30] = 20                                  # a dark patch (a strong edge) off the crease
    monkeypatch.setattr(MaskDetector, "scratch_probabilities", lambda self, g, tile=None: np.zeros(g.shape, np.float32))
    m = tiny_pipeline.detect(gray, "none", points=[(48, int(20 + 48 * 0.4))])
    near = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert near[yy[5:91], np.arange(5, 91)].mean() > 0.8      # followed along most of its length
    assert m.sum() < 6 * 96 and not m[70:90, 10:30].any()    # and nothing else


def test_cli_select_and_explain(tiny_pipeline, tmp_path, capsys, monkeypatch):
    from pipeline.restore import main
    gray = np.full((48, 64), 120, np.uint8)
    Image.fromarray(gray).save(tmp_path / "in.png")
    tiny_pipeline.save(tmp_path / "pipe")
    assert main([str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "pipe"), "--out", str(tmp_path / "o"),
                 "--damage", "none", "--explain", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "preset: photo" in out and "no damage looked for" in out
    assert main([str(tmp_path / "in.png"), str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "pipe"),
                 "--out", str(tmp_path / "o2"), "--select", "3,4", "--no-progress"]) == 2
    assert "clicks apply to one input" in capsys.readouterr().err


def test_a_click_keeps_a_competition_input_competition_and_one_off_the_photo_selects_nothing(tiny_pipeline,
                                                                                             monkeypatch):
    from stages import MaskDetector
    gray, mask = _shape_input()
    prob = np.zeros(gray.shape, np.float32)
    prob[:, 70] = 0.9                                        # a crack beside the shape
    monkeypatch.setattr(MaskDetector, "scratch_probabilities", lambda self, g, tile=None: prob)
    shape = torch.from_numpy(mask.astype(np.float32))[None, None]
    monkeypatch.setattr(MaskDetector, "probabilities", lambda self, x: shape.expand(len(x), -1, -1, -1))
    r = tiny_pipeline.restore(gray, points=np.array([[70, 30]]), return_intermediates=True)
    assert r.report.damage == "points" and r.report.preset == "competition"   # the shape was found: still one
    off = tiny_pipeline.detect(gray, "none", points=[(-500, 30), (70, 900)])
    assert not off.any()


def test_recolour_asked_is_reported_and_decides_the_preset_as_a_gray_input_would(tiny_pipeline):
    rgb = colourful(64, 80, 9)
    r = tiny_pipeline.restore(rgb, mask=_crack(), keep_colour=False, return_intermediates=True)
    assert r.report.colour == "colourised (recolour was asked for)"
