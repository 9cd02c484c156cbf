"""A shared mixin every stage's tests inherit, run on tiny models and 64-px inputs."""
import importlib.util

import numpy as np
import pytest
import torch
import yaml

from stages import STAGES, CheckpointError, Colorizer, Inpainter, MaskDetector, Stage
from tests.conftest import colourful, tiny


def make_batch(b=2, size=64, seed=0):
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    out = {"gray": [], "target_gray": [], "rgb": [], "mask": []}
    for i in range(b):
        rgb = colourful(size, size, seed + i)
        d = random_damage(size, size, np.random.default_rng(seed + i))
        g = pil_gray(rgb)
        out["gray"].append(torch.from_numpy(apply_damage(g, d)).float()[None] / 255)
        out["target_gray"].append(torch.from_numpy(g).float()[None] / 255)
        out["rgb"].append(torch.from_numpy(rgb).float().permute(2, 0, 1) / 255)
        out["mask"].append(torch.from_numpy(np.array(d.mask)).float()[None])
    return {k: torch.stack(v) for k, v in out.items()}


class StageTestMixin:
    cls: type = Stage
    name: str = ""
    out_channels: int = 1
    out_stride: int = 1

    def make(self, **kw):
        return tiny(self.cls, **kw)

    def inputs(self, batch):
        return (batch["gray"],)

    def test_registered(self):
        assert STAGES[self.name] is self.cls and self.cls.name == self.name

    def test_forward_shape(self):
        st = self.make()
        out = st(*self.inputs(make_batch()))
        assert out.shape[0] == 2 and out.shape[-2:] == (64 // self.out_stride,) * 2
        assert out.shape[1] == self.out_channels

    def test_odd_size_forward(self):
        st = self.make()
        b = make_batch(1, 64)
        x = tuple(t[..., :37, :53] for t in self.inputs(b))
        s = self.out_stride
        assert st(*x).shape[-2:] == (-(-37 // s), -(-53 // s))

    def test_loss_and_backward(self):
        st = self.make().train()
        losses = st.loss(make_batch())
        assert "loss" in losses and losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
        losses["loss"].backward()
        named = [(n, p.grad) for n, p in st.named_parameters() if p.requires_grad]
        # tiny encoders (depth 3) may carry unused deeper blocks; everything else must learn
        assert not [n for n, g in named if g is None and not n.startswith("net.encoder")]
        assert sum(float(g.abs().sum()) for _, g in named if g is not None) > 0

    @pytest.mark.slow  # 15 optimisation steps
    def test_a_few_steps_reduce_the_loss(self):
        st = self.make().train()
        batch = make_batch(2, 64, seed=3)
        opt = torch.optim.Adam(st.parameters(), lr=3e-3)
        first = None
        for _ in range(15):
            loss = st.loss(batch)["loss"]
            first = float(loss.detach()) if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert float(st.loss(batch)["loss"].detach()) < first

    def test_metrics_are_finite(self):
        m = self.make().metrics(make_batch())
        assert m and all(np.isfinite(v) for v in m.values())

    def test_visualize_panels(self):
        panels = self.make().visualize(make_batch())
        assert len(panels) == 3 and all(p.shape == (2, 3, 64, 64) for p in panels)

    def test_save_load_round_trip(self, tmp_path):
        st = self.make()
        with torch.no_grad():  # make the weights distinctive
            for p in st.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        st.save(tmp_path / "s")
        assert sorted(f.name for f in (tmp_path / "s").iterdir()) == ["config.yaml", "model.safetensors"]
        loaded = self.cls.load(tmp_path / "s")
        generic = Stage.load(tmp_path / "s")
        assert type(loaded) is self.cls and type(generic) is self.cls
        b = make_batch(1)
        with torch.no_grad():
            assert torch.allclose(st(*self.inputs(b)), loaded(*self.inputs(b)), atol=1e-6)
        assert loaded.config == st.config

    def test_fp16_save_is_smaller_and_close(self, tmp_path):
        st = self.make()
        st.save(tmp_path / "a")
        st.save(tmp_path / "b", dtype=torch.float16)
        assert (tmp_path / "b/model.safetensors").stat().st_size < (tmp_path / "a/model.safetensors").stat().st_size
        b = make_batch(1)
        with torch.no_grad():
            ref, half = st(*self.inputs(b)), self.cls.load(tmp_path / "b")(*self.inputs(b))
        assert (ref - half).abs().max() < 0.05 * (ref.abs().max() + 1)

    def test_freeze_keeps_eval_and_no_grads(self):
        st = self.make()
        st.freeze()
        st.train()
        assert st.frozen and not st.training
        assert not any(m.training for m in st.modules())
        assert not any(p.requires_grad for p in st.parameters())
        st.unfreeze()
        st.train()
        assert st.training and all(p.requires_grad for p in st.parameters())

    def test_load_refuses_another_stage_type(self, tmp_path):
        self.make().save(tmp_path / "s")
        other = next(c for c in (MaskDetector, Inpainter, Colorizer) if c is not self.cls)
        with pytest.raises(CheckpointError, match="not a"):
            other.load(tmp_path / "s")

    def test_truncated_weights_give_a_clear_error(self, tmp_path):
        self.make().save(tmp_path / "s")
        f = tmp_path / "s/model.safetensors"
        f.write_bytes(f.read_bytes()[:200])
        with pytest.raises(CheckpointError, match="model.safetensors"):
            Stage.load(tmp_path / "s")

    def test_config_naming_code_or_unknown_stage_is_refused(self, tmp_path):
        self.make().save(tmp_path / "s")
        cfg = tmp_path / "s/config.yaml"
        meta = yaml.safe_load(cfg.read_text())
        cfg.write_text(yaml.safe_dump({**meta, "stage": "os.system"}))
        with pytest.raises(CheckpointError, match="unknown stage"):
            Stage.load(tmp_path / "s")
        cfg.write_text(yaml.safe_dump({**meta, "config": {**meta["config"], "_target_": "os.system"}}))
        with pytest.raises(CheckpointError, match="_target_"):
            Stage.load(tmp_path / "s")
        with pytest.raises(CheckpointError, match="config.yaml is missing"):
            Stage.load(tmp_path)


class TestMaskDetector(StageTestMixin):
    cls, name, out_channels = MaskDetector, "mask", 1

    def test_predict_is_boolean_mask(self):
        m = self.make().predict(make_batch()["gray"])
        assert m.dtype == torch.bool and m.shape == (2, 1, 64, 64)

    def test_refine_snaps_to_the_constant_fill(self):
        st = self.make()
        rng = np.random.default_rng(0)
        gray = rng.integers(120, 256, (64, 64), dtype=np.uint8)
        gray[10:40, 12:50] = 33
        rough = np.zeros((64, 64), bool)
        rough[12:37, 14:47] = True  # too small by 2-3 px on every side
        out = st.postprocess(rough, gray)
        truth = np.zeros((64, 64), bool)
        truth[10:40, 12:50] = True
        assert np.array_equal(out, truth)

    def test_refine_keeps_textured_damage(self):
        st = self.make()
        gray = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
        rough = np.zeros((64, 64), bool)
        rough[10:30, 10:30] = True
        assert np.array_equal(st.postprocess(rough, gray), rough)

    def test_input_blur_is_part_of_the_network_in_training_and_inference(self, tmp_path):
        from stages.nets import gaussian_blur
        torch.manual_seed(0)
        st = self.make(input_blur=1.0)
        plain = self.make()
        plain.load_state_dict(st.state_dict())  # the blur adds no weights: old checkpoints still load
        g = make_batch()["gray"]
        noisy = (g + 0.1 * torch.randn_like(g)).clamp(0, 1)
        assert torch.allclose(st(noisy), plain(gaussian_blur(noisy, 1.0)), atol=1e-5)
        assert not torch.allclose(st(noisy), plain(noisy), atol=1e-3)
        assert gaussian_blur(noisy, 1.0).std() < noisy.std()  # the fine noise is what it removes
        with pytest.raises(ValueError, match="input_blur is an architecture setting"):
            st.set("input_blur", 0.0)
        st.save(tmp_path / "m")
        assert MaskDetector.load(tmp_path / "m").config["input_blur"] == 1.0


    def test_input_sharp_adds_the_unblurred_gray_as_a_channel_that_starts_at_zero(self, tmp_path):
        from pipeline.training.state import _init_from
        torch.manual_seed(0)
        blur = self.make(input_blur=1.0)
        blur.save(tmp_path / "blur")
        both = self.make(input_blur=1.0, input_sharp=True)
        _init_from(both, tmp_path / "blur")      # the widened first convolution: the sharp channel at zero
        g = make_batch()["gray"]
        noisy = (g + 0.1 * torch.randn_like(g)).clamp(0, 1)
        assert torch.allclose(both(noisy), blur(noisy), atol=1e-5)
        first = next(p for n, p in both.named_parameters() if p.dim() == 4)
        assert first.shape[1] == both.net_in_channels == 2  # what engines probe and export with
        with torch.no_grad():
            first[:, 1] += 0.1                    # once the sharp channel has weight, the noise reaches the output
        assert not torch.allclose(both(noisy), blur(noisy), atol=1e-3)
        both.save(tmp_path / "both")
        again = MaskDetector.load(tmp_path / "both")
        assert again.config["input_sharp"] and torch.allclose(again(noisy), both(noisy), atol=1e-5)
        if importlib.util.find_spec("onnxruntime"):      # an inference engine runs the two-channel network
            ref = again(noisy)
            again.use_runtime(again.export_onnx(), "onnxruntime")
            assert torch.allclose(again(noisy), ref, atol=1e-4)
        with pytest.raises(ValueError, match="input_sharp needs input_blur"):
            self.make(input_sharp=True)

class TestInpainter(StageTestMixin):
    cls, name, out_channels = Inpainter, "inpaint", 1

    def inputs(self, batch):
        return batch["gray"], batch["mask"]

    def test_predict_keeps_pixels_outside_the_mask(self):
        b = make_batch()
        out = self.make().predict(b["gray"], b["mask"])
        keep = b["mask"] == 0
        assert torch.equal(out[keep], b["gray"][keep])
        assert not torch.equal(out[~keep], b["gray"][~keep])

    def test_work_size_keeps_outside_too(self):
        b = make_batch()
        out = self.make(work_size=32).predict(b["gray"], b["mask"])
        keep = b["mask"] == 0
        assert out.shape == b["gray"].shape and torch.equal(out[keep], b["gray"][keep])

    def test_untrained_telea_prefill_starts_at_telea_and_constant_mode_works(self):
        import cv2
        b = make_batch()
        st = self.make(prefill="telea", thin=None)  # thin parts' Telea starts from the fill around them
        out = st.predict(b["gray"], b["mask"])
        for o, g, m in zip(out, b["gray"], b["mask"]):
            g8 = (g[0].numpy() * 255).round().astype(np.uint8)
            tel = cv2.inpaint(g8, (m[0].numpy() > 0.5).astype(np.uint8), 3, cv2.INPAINT_TELEA)
            assert np.abs((o[0].numpy() * 255).round() - tel).max() <= 1
        const = self.make(prefill="constant", thin=None).predict(b["gray"], b["mask"])
        assert const.shape == out.shape and not torch.allclose(const, out)
        with pytest.raises(ValueError, match="prefill"):
            self.make(prefill="nope")

    def test_thin_parts_of_a_hole_keep_telea_and_thick_parts_the_network(self):
        import cv2
        gray = np.random.default_rng(0).integers(60, 200, (64, 64)).astype(np.uint8)  # grainy
        mask = np.zeros((64, 64), bool)
        mask[40, 5:60] = True   # a 1-px crack
        mask[5:25, 5:25] = True  # a thick hole
        on = self.make(prefill="constant").inpaint(gray, mask)
        off = self.make(prefill="constant", thin=None).inpaint(gray, mask)
        crack = np.zeros_like(mask)
        crack[40, 5:60] = True
        telea = cv2.inpaint(gray, crack.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        assert np.array_equal(on[crack], telea[crack]) and not np.array_equal(off[crack], telea[crack])
        assert np.array_equal(on[5:25, 5:25], off[5:25, 5:25])
        assert np.array_equal(on[~mask], gray[~mask])

    def test_ssim_term_stays_fp32_under_bf16_autocast(self):
        # bf16 SSIM once produced a -inf loss mid-training (variances cancel in bf16)
        b = make_batch()
        b["target_gray"] = torch.full_like(b["target_gray"], 0.7)  # flat target: variances ~ 0
        st = self.make()
        exact = st.loss(b)["ssim"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = st.loss(b)
        assert torch.isfinite(mixed["loss"])
        assert abs(float(mixed["ssim"]) - float(exact)) < 2e-3


class TestColorizer(StageTestMixin):
    cls, name, out_stride = Colorizer, "colorize", 4
    out_channels = len(Colorizer(**{"encoder_name": "tu-mobilenetv3_small_050", "encoder_depth": 3,
                                     "decoder_channels": [16, 8, 8]}).centers)

    def test_ab_classes_round_trip(self):
        st = self.make()
        assert 150 < st.num_classes < 400
        ab = st.centers.T.reshape(1, 2, 1, -1)
        assert torch.equal(st.classes_of(ab)[0, 0], torch.arange(st.num_classes))

    def test_prepare_estimates_the_prior(self):
        st = self.make()
        before = st.prior.clone()
        st.prepare([make_batch()], max_batches=1)
        assert not torch.allclose(before, st.prior) and abs(float(st.prior.sum()) - 1) < 1e-4
        w = st.class_weights()
        assert float((w * st.prior).sum()) == pytest.approx(1.0, abs=1e-4)

    def test_colorize_keeps_the_gray(self):
        from PIL import Image
        from stages.nets import to_uint8
        st = self.make()
        b = make_batch()
        imgs = st.colorize(list(to_uint8(b["target_gray"])))
        for img, g in zip(imgs, b["target_gray"]):
            g8 = (g[0].numpy() * 255).round().astype(int)
            lum = np.asarray(Image.fromarray(img).convert("L")).astype(int)
            assert (np.abs(lum - g8) <= 1).mean() >= 0.99

    def test_prior_shift_moves_the_decoded_colour_away_from_the_common_classes(self):
        st = self.make(temperature=1.0)
        common, rare = 0, st.num_classes - 1
        prior = torch.full((st.num_classes,), 1e-4)
        prior[common] = 1.0
        st.prior.copy_(prior / prior.sum())
        out = torch.full((1, st.num_classes, 2, 2), -9.0)
        out[:, common], out[:, rare] = 0.0, 0.0  # the network is torn between the two
        plain = st.decode(out)
        assert torch.equal(plain, st.decode(out))  # prior_shift 0: the plain annealed mean
        st.set("prior_shift", 0.2)
        to_rare = (st.decode(out) - plain).flatten(2).mean(-1)[0]
        direction = st.centers[rare] - st.centers[common]
        assert float(to_rare @ direction) > 0.1 * float(direction @ direction)
        with pytest.raises(ValueError, match="training setting"):
            st.set("hue_weight", 1.0)  # prior_shift is an inference setting, hue_weight is not

    def test_hole_weight_scales_the_cross_entropy_of_damaged_cells_only(self):
        torch.manual_seed(0)
        st = self.make()
        b = make_batch()
        ce = lambda s, batch: float(s.loss(batch)["ce"])  # noqa: E731
        heavy = self.make(hole_weight=3.0)
        heavy.load_state_dict(st.state_dict())
        plain = ce(st, b)
        assert ce(heavy, b) > plain * 1.01                       # the damaged cells count more
        assert ce(heavy, {**b, "mask": torch.zeros_like(b["mask"])}) == pytest.approx(plain)
        assert ce(heavy, {**b, "mask": torch.ones_like(b["mask"])}) == pytest.approx(3 * plain)
        with pytest.raises(ValueError, match="training setting"):
            heavy.set("hole_weight", 1.0)

    def test_regression_mode(self):
        st = self.make(mode="regression")
        assert st(make_batch()["gray"]).shape[1] == 2
        st.loss(make_batch())["loss"].backward()

    def test_soft_hue_histogram_matches_opencv(self):
        import cv2
        from pipeline.metrics import hue_correlation
        from stages.colorize import hue_correlation_loss, soft_hue_histogram
        # one colour per image: the soft histogram peaks at OpenCV's hue bin
        rgb8 = np.random.default_rng(1).integers(0, 256, (40, 1, 1, 3), dtype=np.uint8)
        rgb8 = rgb8[np.ptp(rgb8.astype(int), -1)[:, 0, 0] > 20]
        cv_hue = [int(cv2.cvtColor(c, cv2.COLOR_RGB2HSV)[0, 0, 0]) for c in rgb8]
        soft = soft_hue_histogram(torch.from_numpy(rgb8).permute(0, 3, 1, 2).float() / 255)
        diff = (soft.argmax(1) - torch.tensor(cv_hue)).abs()
        assert len(cv_hue) > 20 and int(torch.minimum(diff, 180 - diff).max()) <= 1
        # on whole images the loss tracks the metric's C term
        t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255  # noqa: E731
        for seed in range(4):
            a, b = colourful(seed=seed), colourful(seed=seed + 10)
            assert abs((1 - float(hue_correlation_loss(t(b), t(a)))) - hue_correlation(a, b)) < 0.15
            assert float(hue_correlation_loss(t(a), t(a))) < 1e-5
        # the O(pixels) histogram used for large targets is the soft one, up to the within-bin offset
        from stages.colorize import binned_hue_histogram
        img = t(colourful(96, 96, seed=5))
        soft, binned = soft_hue_histogram(img), binned_hue_histogram(img)
        assert float(torch.corrcoef(torch.cat([soft, binned]))[0, 1]) > 0.98
        assert float(binned.sum()) == pytest.approx(float(soft.sum()), rel=0.02)
        assert float(hue_correlation_loss(t(colourful(24, 24, seed=5)), img)) < 0.2  # sizes may differ

    def test_hue_loss_trains_the_logits(self):
        st = self.make(hue_weight=2.0)
        terms = st.loss(make_batch())
        assert 0 < float(terms["hue"]) <= 2
        terms["loss"].backward()
        grads = [p.grad for p in st.parameters() if p.grad is not None]
        plain = self.make()
        plain.loss(make_batch())["loss"].backward()
        assert "hue" not in plain.loss(make_batch())
        assert any(not torch.allclose(g, p.grad) for g, p in
                   zip(grads, [p for p in plain.parameters() if p.grad is not None]))
        # hue_target full: the truth's histogram from every pixel, not the head-grid average
        full = self.make(hue_weight=2.0, hue_target="full").loss(make_batch())
        assert 0 < float(full["hue"]) <= 2 and float(full["ce"]) == pytest.approx(float(terms["ce"]))
        assert abs(float(full["hue"]) - float(terms["hue"])) > 1e-4
        with pytest.raises(ValueError, match="hue_target"):
            self.make(hue_target="pixels")


def test_shrink_is_area_downscaling():
    from stages.nets import shrink
    for h, w, ws in ((64, 64, 32), (64, 48, 32), (60, 40, 20), (65, 64, 32), (30, 20, 64)):
        x = torch.rand(2, 1, h, w)
        s = min(1.0, ws / max(h, w))
        ref = torch.nn.functional.interpolate(x, size=(round(h * s), round(w * s)), mode="area")
        assert torch.allclose(shrink(x, ws), ref, atol=1e-6), (h, w, ws)


def test_constructor_arguments_are_the_config_and_only_inference_settings_change(tmp_path):
    st = tiny(Colorizer, saturation=0.7)
    assert st.config["saturation"] == 0.7 and st.config["decoder_channels"] == [16, 8, 8]
    assert list(st.config) == Colorizer.config_keys()  # recorded once, from the signature
    st.set("temperature", 0.2)
    assert st.config["temperature"] == 0.2
    with pytest.raises(ValueError, match="head_stride is an architecture setting"):
        st.set("head_stride", 2)
    with pytest.raises(ValueError, match="hue_weight is a training setting"):
        st.set("hue_weight", 1.0)
    with pytest.raises(KeyError, match="no setting 'nope'"):
        st.set("nope", 1)
    st.save(tmp_path / "c")
    assert Colorizer.load(tmp_path / "c").config == st.config


def test_a_newer_checkpoint_format_asks_for_an_upgrade(tmp_path):
    import yaml

    from pipeline import Pipeline
    from stages import CheckpointError
    tiny(MaskDetector).save(tmp_path / "m")
    f = tmp_path / "m" / "config.yaml"
    meta = yaml.safe_load(f.read_text())
    assert meta["format"] == "restore-stage/1"
    f.write_text(yaml.safe_dump({**meta, "format": "restore-stage/2"}))
    with pytest.raises(CheckpointError, match="newer restore-pipeline.*upgrade"):
        MaskDetector.load(tmp_path / "m")
    f.write_text(yaml.safe_dump({**meta, "format": "something-else/1"}))
    with pytest.raises(CheckpointError, match="is not 'restore-stage'"):
        MaskDetector.load(tmp_path / "m")
    Pipeline(mask=tiny(MaskDetector)).save(tmp_path / "p")
    pf = tmp_path / "p" / "pipeline.yaml"
    pf.write_text(pf.read_text().replace("restore-pipeline/1", "restore-pipeline/7"))
    with pytest.raises(CheckpointError, match="pipeline.yaml: format 'restore-pipeline/7' was written by a newer"):
        Pipeline.load(tmp_path / "p")
