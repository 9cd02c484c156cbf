import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import Pipeline
from pipeline.io import ImageError
from stages import Colorizer, Inpainter, MaskDetector, Stage
from tests.conftest import colourful, tiny


def damaged_image(h=64, w=64, seed=0):
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    d = random_damage(h, w, np.random.default_rng(seed))
    return apply_damage(pil_gray(colourful(h, w, seed)), d), d.mask


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (300, 700), (64, 64)])
def test_restore_any_size_returns_rgb_of_that_size(tiny_pipeline, size):
    h, w = size
    arr = np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
    out = tiny_pipeline.restore(arr)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (w, h)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "CMYK", "1"])
def test_restore_any_mode(tiny_pipeline, mode):
    rgb = Image.fromarray(colourful(40, 48))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
        assert img.mode.startswith("I;16")
    else:
        img = rgb.convert(mode)
    out = tiny_pipeline.restore(img)
    assert out.mode == "RGB" and out.size == (48, 40)


def test_restore_path_and_array_agree(tiny_pipeline, tmp_path):
    gray, _ = damaged_image()
    p = tmp_path / "x.png"
    Image.fromarray(gray).save(p)
    a = np.asarray(tiny_pipeline.restore(gray))
    b = np.asarray(tiny_pipeline.restore(str(p)))
    assert np.array_equal(a, b)


def test_given_mask_outside_unchanged_and_luma_kept(tiny_pipeline):
    gray, mask = damaged_image(64, 64, 3)
    r = tiny_pipeline.restore(gray, mask=Image.fromarray(mask.astype(np.uint8) * 255), return_intermediates=True)
    g = np.asarray(r.gray)
    assert np.array_equal(np.asarray(r.mask) > 0, mask)
    assert np.array_equal(g[~mask], gray[~mask])
    assert not np.array_equal(g[mask], gray[mask])  # the hole was filled by the inpainter
    lum = np.asarray(r.image.convert("L")).astype(int)
    assert (np.abs(lum - g.astype(int)) <= 1).mean() >= 0.99


def test_hole_saturation_scales_the_colour_of_the_filled_pixels_only(tmp_path):
    pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer, saturation=30.0))
    gray, mask = damaged_image(64, 64, 3)
    full = np.asarray(pipe.restore(gray, mask=mask)).astype(int)
    pipe.colorize.set("hole_saturation", 0.0)
    pipe.save(tmp_path / "p")
    pipe = Pipeline.load(tmp_path / "p")
    assert pipe.colorize.config["hole_saturation"] == 0.0
    none = np.asarray(pipe.restore(gray, mask=mask)).astype(int)
    chroma = lambda img: img.max(-1) - img.min(-1)  # noqa: E731
    assert np.array_equal(none[~mask], full[~mask])
    assert chroma(full)[mask].mean() > 3 and chroma(none)[mask].max() <= 2
    many = pipe.restore_many([gray, gray], [mask, None])
    assert np.array_equal(np.asarray(many[0].image), none.astype(np.uint8))
    for bad in (-0.5, "half", True):
        with pytest.raises(ValueError, match="hole_saturation"):
            pipe.colorize.set("hole_saturation", bad)


def test_former_pipeline_options_are_upgraded_on_load(tmp_path):
    import yaml
    Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer)).save(tmp_path / "p")
    f = tmp_path / "p" / "pipeline.yaml"
    meta = yaml.safe_load(f.read_text())
    assert set(meta["options"]) == {"precision", "tile_size", "tile_overlap", "backend", "preset"}
    meta["options"].update(context=32, hole_saturation=0.5)   # what pipelines saved before they moved
    f.write_text(yaml.safe_dump(meta))
    old = Pipeline.load(tmp_path / "p")
    assert old.inpaint.config["context"] == 32 and old.colorize.config["hole_saturation"] == 0.5
    with pytest.raises(TypeError):
        Pipeline(inpaint=tiny(Inpainter), context=16)         # the pipeline option itself is gone
    old.save(tmp_path / "q")
    assert "context" not in yaml.safe_load((tmp_path / "q" / "pipeline.yaml").read_text())["options"]
    assert Pipeline.load(tmp_path / "q").inpaint.config["context"] == 32


def test_saturation_is_an_argument_of_the_call_never_a_change_of_the_setting():
    pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer, saturation=30.0))
    gray, mask = damaged_image(64, 64, 5)
    chroma = lambda img: np.ptp(np.asarray(img).astype(int), -1)  # noqa: E731
    gray_only = pipe.restore(gray, mask=mask, saturation=0.0)
    assert chroma(gray_only).max() <= 2 and pipe.colorize.config["saturation"] == 30.0
    assert chroma(pipe.restore(gray, mask=mask)).mean() > 3


def test_context_is_the_inpainters_setting_and_only_that_window_is_read():
    gray, mask = damaged_image(128, 128, 6)
    inp = tiny(Inpainter, context=4, prefill="constant", window_step=None)  # (an untrained telea head adds nothing)
    far = np.ones_like(mask)
    ys, xs = np.nonzero(mask)
    far[max(0, ys.min() - 6):ys.max() + 7, max(0, xs.min() - 6):xs.max() + 7] = False
    noisy = gray.copy()
    noisy[far] = np.random.default_rng(0).integers(0, 255, int(far.sum()))
    assert np.array_equal(inp.inpaint(gray, mask)[mask], inp.inpaint(noisy, mask)[mask])
    assert not np.array_equal(inp.inpaint(gray, mask, context=64)[mask], inp.inpaint(noisy, mask, context=64)[mask])


def test_the_inpainters_window_grows_to_a_few_square_shapes_inside_the_image():
    rng = np.random.default_rng(1)
    shapes = {None: set(), 64: set()}
    for step, seen in shapes.items():
        inp = tiny(Inpainter, prefill="constant", context=8, window_step=step)
        net = inp.run_net
        inp.run_net = lambda x, net=net, seen=seen: (seen.add(tuple(x.shape[-2:])), net(x))[1]
        for _ in range(12):
            gray = rng.integers(0, 256, (300, 200), dtype=np.uint8)
            mask = np.zeros(gray.shape, bool)
            h, w = rng.integers(4, 120, 2)
            y, x = rng.integers(0, 300 - h), rng.integers(0, 200 - w)
            mask[y:y + h, x:x + w] = True
            out = inp.inpaint(gray, mask)
            assert np.array_equal(out[~mask], gray[~mask]) and not np.array_equal(out[mask], gray[mask])
    assert len(shapes[64]) <= 3 < 8 <= len(shapes[None])
    assert all(h == w or (h, w) in ((256, 200), (300, 200)) for h, w in shapes[64])


def test_detected_mask_is_used(tiny_pipeline):
    gray, _ = damaged_image(64, 64, 4)
    r = tiny_pipeline.restore(gray, return_intermediates=True)
    m = np.asarray(r.mask) > 0
    assert r.mask.mode == "L" and m.shape == gray.shape
    assert np.array_equal(np.asarray(r.gray)[~m], gray[~m])


def test_wrong_size_mask_is_one_clear_error(tiny_pipeline):
    gray, _ = damaged_image()
    with pytest.raises(ImageError, match="mask is 10x10, the image is 64x64"):
        tiny_pipeline.restore(gray, mask=np.zeros((10, 10), np.uint8))


def test_unreadable_file_is_one_clear_error(tiny_pipeline, tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match="broken.png"):
        tiny_pipeline.restore(str(p))


def test_save_load_round_trip_and_swap(tiny_pipeline, tmp_path):
    tiny_pipeline.save(tmp_path / "p")
    assert {f.name for f in (tmp_path / "p").iterdir()} == {"pipeline.yaml", "mask", "inpaint", "colorize"}
    loaded = Pipeline.load(tmp_path / "p")
    gray, _ = damaged_image(64, 64, 5)
    assert np.array_equal(np.asarray(loaded.restore(gray)), np.asarray(tiny_pipeline.restore(gray)))
    # swap one stage for a differently initialised one; it survives save/load
    torch.manual_seed(123)
    new = Inpainter(encoder_name="tu-mobilenetv3_small_050", encoder_depth=3, decoder_channels=[16, 8, 8], hole_weight=3.0)
    loaded.inpaint = new
    loaded.save(tmp_path / "q")
    again = Pipeline.load(tmp_path / "q")
    assert isinstance(again.inpaint, Inpainter) and again.inpaint.config["hole_weight"] == 3.0
    assert torch.equal(next(again.inpaint.parameters()), next(new.parameters()))
    assert isinstance(again.mask, Stage) and isinstance(again.colorize, Colorizer)


def test_slots_only_take_stages():
    p = Pipeline()
    with pytest.raises(TypeError):
        p.inpaint = "not a stage"
    with pytest.raises(RuntimeError, match="no 'mask' stage"):
        p.restore(np.zeros((8, 8), np.uint8))


def test_mask_given_skips_detection():
    p = Pipeline(inpaint=tiny(Inpainter), colorize=tiny(Colorizer))
    gray, mask = damaged_image()
    assert p.restore(gray, mask=mask).size == (64, 64)


def test_tiled_and_untiled_agree_away_from_borders():
    torch.manual_seed(0)
    inp = Inpainter(encoder_name="tu-mobilenetv3_small_050", encoder_depth=3, decoder_channels=[16, 8, 8])
    col = Colorizer(encoder_name="tu-mobilenetv3_small_050", encoder_depth=3, decoder_channels=[16, 8, 8],
                    work_size=None, head_stride=1)
    det = MaskDetector(encoder_name="tu-mobilenetv3_small_050", encoder_depth=3, decoder_channels=[16, 8, 8])
    gray, mask = damaged_image(160, 192, 6)
    whole = Pipeline(mask=det, inpaint=inp, colorize=col, tile_size=4096)
    tiles = Pipeline(mask=det, inpaint=inp, colorize=col, tile_size=96, tile_overlap=48)
    a = np.asarray(whole.restore(gray, mask=mask)).astype(int)
    b = np.asarray(tiles.restore(gray, mask=mask)).astype(int)
    assert np.abs(a - b).mean() < 3.0
    pa = whole.detect(gray)
    pb = tiles.detect(gray)
    assert (pa == pb).mean() > 0.97


def test_shipped_name_that_does_not_exist():
    from stages import CheckpointError
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Pipeline.load("no-such-checkpoint-name")


def _scratch_pipe():
    from pipeline import Pipeline
    from stages import MaskDetector
    from tests.conftest import tiny
    return Pipeline(mask=tiny(MaskDetector), scratch=tiny(MaskDetector, kind="scratches", min_region=5),
                    damage_policy={"min_region": 5})


def _policy(pipe, **settings):
    """The pipeline's damage policy with ``settings`` changed."""
    from dataclasses import replace
    pipe.damage_policy = replace(pipe.damage_policy, **settings)


def test_the_scratch_slot_saves_loads_and_takes_only_a_detector(tmp_path):
    from pipeline import Pipeline
    from stages import Inpainter
    from tests.conftest import tiny
    pipe = _scratch_pipe()
    pipe.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert loaded.scratch.config["kind"] == "scratches" and loaded.scratch.config["min_region"] == 5
    with pytest.raises(TypeError, match="scratch must be a 'mask' stage"):
        loaded.scratch = tiny(Inpainter)



def test_a_second_scratch_detector_joins_the_first_and_the_damage_policy_decides(monkeypatch, tmp_path):
    """``scratch2``: its probability joins ``scratch``'s (the higher kept); the threshold and gate are
    the pipeline's damage policy's, not either detector's."""
    pipe = _scratch_pipe()
    _policy(pipe, threshold=0.7)
    pipe.scratch2 = tiny(MaskDetector, kind="scratches", threshold=0.1)
    assert pipe.damage == "auto"
    first, second = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    first[10, 5:60] = 0.9                        # a scratch the first one sees
    second[40, 5:60] = 0.9                       # one only the second sees
    second[55, 5:60] = 0.5                       # one under the first's threshold (above the second's own)
    probs = {id(pipe.scratch): first, id(pipe.scratch2): second}
    monkeypatch.setattr(MaskDetector, "scratch_probabilities", lambda self, g, tile=None: probs[id(self)])
    gray = np.full((64, 64), 120, np.uint8)
    m = pipe.detect(gray, damage="scratches")
    assert m[10, 30] and m[40, 30] and not m[55, 30]
    monkeypatch.setattr(type(pipe.mask), "probabilities", lambda self, x: torch.zeros_like(x))  # no shape
    _policy(pipe, min_damage=0.06)         # the gate on the joined find: two scratches pass (8 %) ...
    assert pipe.detect(gray, damage="auto")[40, 30]
    second[:] = 0                                # ... one alone (4 %) does not
    assert not pipe.detect(gray, damage="auto").any() and pipe.detect(gray, damage="scratches")[10, 30]
    pipe.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert loaded.damage_policy.threshold == 0.7 and loaded.damage_policy.min_damage == 0.06
    loaded.scratch = None                        # alone, the second one is the scratch path
    assert loaded.damage == "auto" and loaded.stages["scratch2"] is loaded.scratch2
    with pytest.raises(TypeError, match="scratch2 must be a 'mask' stage"):
        loaded.scratch2 = tiny(Inpainter)

def test_what_two_scratch_detectors_agree_on_passes_the_gate_the_whole_find_fails(monkeypatch):
    """``min_agree``: regions both detectors find pass the gate alone; one detector's own finds do not."""
    pipe = _scratch_pipe()
    _policy(pipe, threshold=0.7)
    _policy(pipe, min_damage=0.05)         # a few spots fail the gate as a whole
    pipe.scratch2 = tiny(MaskDetector, kind="scratches")
    first, second = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    first[10:14, 10:14] = second[10:14, 10:14] = 0.95   # a spot both see (0.4 % of the image)
    first[40:44, 40:44] = 0.95                   # a spot only the first sees
    second[50:54, 20:24] = 0.95                  # and one only the second sees
    probs = {id(pipe.scratch): first, id(pipe.scratch2): second}
    monkeypatch.setattr(MaskDetector, "scratch_probabilities", lambda self, g, tile=None: probs[id(self)])
    monkeypatch.setattr(type(pipe.mask), "probabilities", lambda self, x: torch.zeros_like(x))  # no shape
    gray = np.full((64, 64), 120, np.uint8)
    assert not pipe.detect(gray).any()           # min_agree off: the gate as before
    _policy(pipe, min_agree=0.003)
    m = pipe.detect(gray)
    assert m[11, 11] and not m[41, 41] and not m[51, 21]
    _policy(pipe, min_agree=0.01)          # they agree on too little
    assert not pipe.detect(gray).any()
    _policy(pipe, min_agree=0.003)
    pipe.scratch2 = None                         # one detector alone agrees with nobody
    assert not pipe.detect(gray).any()
    assert pipe.detect(gray, damage="scratches")[41, 41]


def test_a_detectors_turned_views_vote_a_find_that_turns_with_the_photo_passes_one_that_stays_put_does_not(
        monkeypatch):
    """``agree_views`` / ``min_votes``: the second detector run on the photo mirrored and transposed
    votes too; damage it finds in every view passes without the first detector, a false find tied
    to the array (not to the photo) lands elsewhere once turned back and gets one vote."""
    pipe = _scratch_pipe()
    _policy(pipe, threshold=0.7)
    _policy(pipe, min_damage=0.05)         # the spots fail the gate as a whole
    _policy(pipe, min_agree=0.003)
    pipe.scratch2 = tiny(MaskDetector, kind="scratches")
    gray = np.full((64, 64), 120, np.uint8)
    gray[10:14, 20:24] = 250                     # real damage: in the photo, turns with it

    def probs(self, g, tile=None):
        p = np.zeros(g.shape, np.float32)
        if self is pipe.scratch2:
            p[g == 250] = 0.95                   # finds the damage in any view
            p[40:44, 30:34] = 0.95               # and a find at one place of the array (mirrored: the same)
        return p
    monkeypatch.setattr(MaskDetector, "scratch_probabilities", probs)
    monkeypatch.setattr(type(pipe.mask), "probabilities", lambda self, x: torch.zeros_like(x))  # no shape
    assert not pipe.detect(gray).any()           # no views: the first detector agrees with nothing
    _policy(pipe, views={"scratch2": ["mirror", "transpose"]})
    _policy(pipe, min_votes=3)             # 3 of 4: scratch, scratch2 and its two views
    m = pipe.detect(gray)
    assert m[11, 21] and not m[41, 31] and not m[31, 41]
    _policy(pipe, min_votes=4)             # all four: the first one never votes
    assert not pipe.detect(gray).any()
    _policy(pipe, min_votes=2)             # 2 of 4: the array-bound find and its mirror agree
    assert pipe.detect(gray)[41, 31] and not pipe.detect(gray)[31, 41]
    _policy(pipe, min_votes=3)
    _policy(pipe, min_agree=0.05)          # the find covers less than min_agree: no views run
    seen = []
    monkeypatch.setattr(MaskDetector, "view_probabilities", lambda *a, **k: seen.append(1))
    assert not pipe.detect(gray).any() and not seen


@pytest.mark.parametrize("view, turn", [("mirror", lambda g: g[:, ::-1]), ("flip", lambda g: g[::-1]),
                                        ("rot180", lambda g: g[::-1, ::-1]), ("transpose", lambda g: g.T),
                                        ("rot90", lambda g: np.rot90(g, -1)), ("rot270", lambda g: np.rot90(g, 1)),
                                        ("antitranspose", lambda g: g[::-1, ::-1].T)])
def test_view_probabilities_see_the_photo_turned_and_turn_the_probabilities_back(monkeypatch, view, turn):
    det = tiny(MaskDetector, kind="scratches")
    gray = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint8)
    seen = []
    monkeypatch.setattr(MaskDetector, "scratch_probabilities",
                        lambda self, g, tile=None: seen.append(g.copy()) or g.astype(np.float32) / 255)
    np.testing.assert_array_equal(det.view_probabilities(gray, view), gray.astype(np.float32) / 255)
    np.testing.assert_array_equal(seen[0], turn(gray))


@pytest.mark.parametrize("key, value", [("views", {"scratch2": ["sideways"]}), ("views", {"scratch2": "mirror"}),
                                        ("min_votes", -1), ("min_votes", 1.5), ("work_side", 10)])
def test_bad_damage_policy_settings_are_refused_in_one_line(key, value, tmp_path):
    import yaml
    from pipeline.policy import DamagePolicy
    with pytest.raises(ValueError, match=f"damage.{key}"):
        DamagePolicy(**{key: value})
    pipe = _scratch_pipe()
    pipe.save(tmp_path / "p")
    meta = yaml.safe_load((tmp_path / "p" / "pipeline.yaml").read_text())
    meta["damage"][key] = value
    (tmp_path / "p" / "pipeline.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match=f"damage.{key}"):
        Pipeline.load(tmp_path / "p")


def test_a_pipeline_saved_before_the_damage_policy_runs_the_gate_its_detector_held(tmp_path):
    """Older checkpoints: the scratch detector's gate settings become the damage policy at load
    (the stage no longer has them); unknown keys never break a load."""
    import yaml
    pipe = _scratch_pipe()
    pipe.scratch2 = tiny(MaskDetector, kind="scratches")
    pipe.save(tmp_path / "p")
    f = tmp_path / "p" / "pipeline.yaml"
    meta = yaml.safe_load(f.read_text())
    del meta["damage"]
    meta["options"]["someday"] = 1
    f.write_text(yaml.safe_dump(meta))
    for slot, extra in (("scratch", {"threshold": 0.7, "min_damage": 0.007, "min_line": 0.5, "min_agree": 0.002,
                                     "min_votes": 3, "a_future_setting": 1}),
                        ("scratch2", {"agree_views": ["mirror", "transpose"], "min_damage": 0.01})):
        cf = tmp_path / "p" / slot / "config.yaml"
        c = yaml.safe_load(cf.read_text())
        c["config"].update(extra)
        cf.write_text(yaml.safe_dump(c))
    old = Pipeline.load(tmp_path / "p")
    d = old.damage_policy
    assert (d.threshold, d.min_region, d.min_damage, d.min_line, d.min_agree, d.min_votes) == (0.7, 5, 0.007, 0.5,
                                                                                                 0.002, 3)
    assert d.views == {"scratch2": ["mirror", "transpose"]}
    assert "min_damage" not in old.scratch.config and "agree_views" not in old.scratch2.config
    old.save(tmp_path / "q")
    assert Pipeline.load(tmp_path / "q").damage_policy == d


def test_detect_sends_shapes_to_the_mask_detector_and_the_rest_to_the_scratch_detector(monkeypatch):
    import torch
    pipe = _scratch_pipe()
    gray = np.full((64, 64), 150, np.uint8)
    gray[10:30, 10:30] = 40                      # a constant fill
    line = np.zeros((64, 64), np.float32)
    line[50, 5:60] = 1                           # a scratch
    line[5, 60] = 1                              # a speck under min_region
    shape_prob = torch.from_numpy((gray == 40).astype(np.float32))[None, None]
    monkeypatch.setattr(type(pipe.mask), "probabilities", lambda self, x: shape_prob.expand(len(x), -1, -1, -1))
    calls = []

    def detail(self, x):
        calls.append(self is pipe.scratch)
        return torch.from_numpy(line)[None, None]
    monkeypatch.setattr(type(pipe.scratch), "detail_probabilities", detail)
    shape = pipe.detect(gray)                     # auto (a scratch detector is there)
    assert np.array_equal(shape, gray == 40) and not calls
    scratches = pipe.detect(gray, damage="scratches")
    assert calls == [True] and scratches[49:52, 10].all() and not scratches[5, 60] and not scratches[20, 20]
    assert pipe.detect(gray, damage="shape").sum() == (gray == 40).sum()
    shape_prob.zero_()
    shape_prob[..., 40:44, 40:44] = 1             # a prediction over textured gray: not a fill
    calls.clear()
    assert np.array_equal(pipe.detect(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)),
                          scratches) and calls == [True]


def test_auto_leaves_a_photo_alone_when_the_scratch_detector_finds_too_little(monkeypatch):
    import torch
    pipe = _scratch_pipe()
    gray = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    line = np.zeros((64, 64), np.float32)
    line[50, 5:60] = 1
    monkeypatch.setattr(type(pipe.mask), "probabilities", lambda self, x: torch.zeros_like(x))
    monkeypatch.setattr(type(pipe.scratch), "detail_probabilities", lambda self, x: torch.from_numpy(line)[None, None])
    _policy(pipe, min_damage=0.2)          # the line covers ~4 % of the image once grown
    assert not pipe.detect(gray).any()           # auto: too little to call the photo damaged
    assert pipe.detect(gray, damage="scratches")[50, 10]  # asked for scratches: the line
    _policy(pipe, min_damage=0.01)
    assert pipe.detect(gray)[50, 10]
    line[50, 5:60] = 0.8                         # found (above the threshold), but nowhere sure (< 0.9)
    _policy(pipe, min_sure=0.005)
    assert not pipe.detect(gray).any() and pipe.detect(gray, damage="scratches")[50, 10]
    line[50, 5:40] = 0.95                        # sure on 35 px: 0.85 % of the image
    assert pipe.detect(gray)[50, 10]


def test_auto_leaves_speckle_alone_but_keeps_cracks_when_it_asks_for_lines(monkeypatch):
    import torch
    pipe = _scratch_pipe()
    gray = np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)
    prob = np.zeros((64, 64), np.float32)
    prob[8:56:16, 8:56:16] = 1                   # 9 round specks (grown to 3x3 blobs): texture read as dust
    prob = cv2.dilate(prob, np.ones((3, 3), np.uint8))
    monkeypatch.setattr(type(pipe.mask), "probabilities", lambda self, x: torch.zeros_like(x))
    monkeypatch.setattr(type(pipe.scratch), "detail_probabilities", lambda self, x: torch.from_numpy(prob)[None, None])
    _policy(pipe, min_damage=0.01)
    assert pipe.detect(gray)[8, 8]               # without min_line the specks pass the gate
    _policy(pipe, min_line=0.5)
    assert not pipe.detect(gray).any()           # none of them is long and thin
    assert pipe.detect(gray, damage="scratches")[8, 8]  # asked for scratches: no gate
    prob[60, 2:62] = 1                           # two long cracks beside them: most of the find is lines
    prob[32, 2:62] = 1
    out = pipe.detect(gray)
    assert out[60, 30] and out[8, 8]             # the gate passes, and keeps the specks too


def test_the_scratch_path_follows_a_crack_where_the_network_is_less_sure(monkeypatch):
    import torch
    pipe = _scratch_pipe()
    gray = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    prob = np.zeros((64, 64), np.float32)
    prob[20, 5:25] = 0.95                        # sure here
    prob[20, 25:60] = 0.4                        # the same crack, less sure
    prob[40, 5:60] = 0.4                         # another faint line, sure nowhere
    monkeypatch.setattr(type(pipe.mask), "probabilities", lambda self, x: torch.zeros_like(x))
    monkeypatch.setattr(type(pipe.scratch), "detail_probabilities", lambda self, x: torch.from_numpy(prob)[None, None])
    _policy(pipe, min_damage=0.01)
    plain = pipe.detect(gray)
    assert plain[20, 10] and not plain[20, 50] and not plain[40, 30]
    _policy(pipe, grow_threshold=0.3)
    grown = pipe.detect(gray)
    assert grown[20, 50] and not grown[40, 30]   # followed along the crack only
    _policy(pipe, min_damage=0.03)         # the sure part alone is too little (grown, 4 %): the rest
    assert not pipe.detect(gray).any()           # does not carry it past the gate


def test_auto_takes_a_constant_fill_as_a_shape_only_when_it_is_large_enough():
    from stages.processors import MaskProcessor
    gray = np.full((100, 100), 150, np.uint8)
    gray[10:40, 10:40] = 30                      # 9 % of the image, one constant gray
    gray[80:82, 80:82] = 0                       # 4 px of clipped black
    post = MaskProcessor(kind="auto", min_shape=0.004)
    assert post.kind_of(gray == 30, gray) == "shape"
    assert post.kind_of(gray == 0, gray) == "scratches"      # too small to be a competition shape
    assert MaskProcessor(kind="auto").kind_of(gray == 0, gray) == "shape"  # without the floor it was
    assert MaskProcessor(kind="shape", min_shape=0.5).kind_of(gray == 0, gray) == "shape"  # asked: obeyed


def test_shape_snap_keeps_every_marked_piece_of_the_fill_and_finds_it_beside_other_marks():
    from stages.processors import MaskProcessor
    rng = np.random.default_rng(3)
    gray = rng.integers(120, 255, (100, 100)).astype(np.uint8)
    gray[10:50, 10:50] = 30                       # a self-intersecting polygon's two pieces
    gray[52:60, 52:60] = 30
    gray[90, 90] = 30                             # a speck of the same gray, not marked
    pred = np.zeros_like(gray, bool)
    pred[12:48, 12:48] = pred[53:59, 53:59] = True
    post = MaskProcessor()
    got = post(pred, gray)
    want = gray == 30
    want[90, 90] = False
    assert np.array_equal(got, want)              # both pieces whole, the speck left alone
    noise = pred.copy()
    noise[66:98, 0:70] = True                     # the network also marked textured gray
    assert post.constant_fill(noise, gray) is None              # the whole prediction is no fill
    assert post.fill_region(noise, gray)[0] == 30                # one of its components is
    assert post(noise, gray)[10:50, 10:50].all() and not post(noise, gray)[80, 20]


def test_hole_ring_takes_the_holes_colour_from_around_it_and_leaves_the_rest():
    import cv2
    pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer, saturation=30.0))
    gray, mask = damaged_image(64, 64, 3)
    pipe.colorize.set("hole_saturation", 0.0)                  # the prediction alone: a colourless hole
    plain = np.asarray(pipe.restore(gray, mask=mask)).astype(int)
    pipe.colorize.set("hole_ring", 1.0)
    ringed = np.asarray(pipe.restore(gray, mask=mask)).astype(int)
    chroma = lambda img: img.max(-1) - img.min(-1)  # noqa: E731
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
    assert np.array_equal(plain[~mask], ringed[~mask])
    assert chroma(plain)[mask].mean() < 3 < 0.5 * chroma(ringed)[ring].mean() < chroma(ringed)[mask].mean()


def test_the_scratch_path_looks_at_more_than_one_scale(monkeypatch):
    import torch
    det = tiny(MaskDetector, kind="scratches", threshold=0.5)
    gray = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    one = det.find_scratches(gray)
    det.set("scales", [1, 2])
    both = det.find_scratches(gray)
    assert both.shape == gray.shape and both.sum() >= one.sum()  # the highest probability of the scales
    big = np.zeros((1100, 40), np.uint8)
    assert det.find_scratches(big).shape == big.shape  # 2x would pass 2048 px: that scale is left out
    det.set("scales", [1, 0.5])
    assert det.find_scratches(gray).shape == gray.shape   # 0.5 would take the short side under 128 px: left out
    large = (np.random.default_rng(1).random((300, 260)) * 255).astype(np.uint8)
    det.set("scales", [1])
    p1 = det.scratch_probabilities(large)
    det.set("scales", [1, 0.5])
    p2 = det.scratch_probabilities(large)
    assert p2.shape == large.shape and (p2 >= p1).all() and (p2 > p1).any()  # the half size seen as well
    with pytest.raises(ValueError, match="scales"):
        tiny(MaskDetector, scales=[0])
    seen = []
    monkeypatch.setattr(type(det), "detail_probabilities", lambda self, x: seen.append(x.clone()) or torch.zeros_like(x))
    det.set("scales", [1])
    det.scratch_probabilities(large)
    det.set("smooth", 1.0)                       # the network sees the gray blurred: a scan's fine noise gone
    det.scratch_probabilities(large)
    rough = lambda x: float((x[..., 1:, :] - x[..., :-1, :]).abs().mean())  # noqa: E731
    assert rough(seen[1]) < 0.5 * rough(seen[0])


def test_the_scratch_detector_is_readied_only_for_an_image_that_takes_its_path(monkeypatch):
    pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer),
                    scratch=tiny(MaskDetector))
    readied, ready = [], pipe._ready
    monkeypatch.setattr(pipe, "_ready", lambda slot: (readied.append(slot), ready(slot))[1])
    gray, _ = damaged_image(64, 64, 1)
    pipe.restore(gray, damage="shape")
    assert "mask" in readied and "scratch" not in readied  # (its engine is set up on first use)
    pipe.restore(gray, damage="scratches")
    assert "scratch" in readied
    pipe.scratch2, readied[:] = tiny(MaskDetector), []
    pipe.restore(gray, damage="shape")
    assert "scratch2" not in readied
    pipe.restore(gray, damage="scratches")
    assert "scratch" in readied and "scratch2" in readied


def test_a_mask_only_pipeline_saved_before_the_policy_keeps_its_detectors_settings(tmp_path):
    """Without a scratch slot the mask detector is the scratch path: its old gate and threshold
    become the policy; an empty ``views:`` loads as none."""
    import yaml
    from pipeline.policy import DamagePolicy
    Pipeline(mask=tiny(MaskDetector, kind="scratches"), inpaint=tiny(Inpainter),
             colorize=tiny(Colorizer)).save(tmp_path / "p")
    meta = yaml.safe_load((tmp_path / "p" / "pipeline.yaml").read_text())
    del meta["damage"]
    (tmp_path / "p" / "pipeline.yaml").write_text(yaml.safe_dump(meta))
    cf = tmp_path / "p" / "mask" / "config.yaml"
    c = yaml.safe_load(cf.read_text())
    c["config"].update(threshold=0.9, min_region=50, min_damage=0.01)
    cf.write_text(yaml.safe_dump(c))
    d = Pipeline.load(tmp_path / "p").damage_policy
    assert (d.threshold, d.min_region, d.min_damage) == (0.9, 50, 0.01)
    assert DamagePolicy.of({"views": None, "threshold": 0.6}) == DamagePolicy(threshold=0.6)
    with pytest.raises(ValueError, match="damage.work_side"):
        DamagePolicy.of({"work_side": "512"})
