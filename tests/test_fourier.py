"""Fourier blocks (LaMa-style) and flip/transpose TTA, on tiny models and small inputs."""
import io

import numpy as np
import pytest
import torch

from stages import Colorizer, Inpainter
from stages.nets import dihedral, tta_mean
from stages.fourier import FourierBlock, irdft2, rdft2
from tests.conftest import tiny
from tests.test_stages import TestInpainter, make_batch


@pytest.mark.parametrize("h,w", [(8, 8), (7, 9), (5, 6), (16, 12)])
def test_dft_by_matrices_equals_torch_fft(h, w):
    x = torch.randn(2, 3, h, w)
    re, im = rdft2(x)
    ref = torch.fft.rfft2(x)
    assert torch.allclose(re, ref.real, atol=1e-4) and torch.allclose(im, ref.imag, atol=1e-4)
    assert torch.allclose(irdft2(re, im, w), x, atol=1e-4)
    spec = torch.randn(2, 3, h, w // 2 + 1, dtype=torch.complex64)
    assert torch.allclose(irdft2(spec.real, spec.imag, w), torch.fft.irfft2(spec, s=(h, w)), atol=1e-4)


def _random_block(ch=8):
    torch.manual_seed(0)
    b = FourierBlock(ch).eval()
    torch.nn.init.normal_(b.proj.weight)  # the block starts as the identity: give it something to do
    return b


def test_a_fourier_block_sees_the_whole_image():
    b = _random_block()
    x = torch.randn(1, 8, 24, 24, requires_grad=True)
    b(x)[0, :, 0, 0].sum().backward()
    # a 3x3 branch alone reaches 1 pixel; the spectral branch reaches the far corner
    assert x.grad[0, :, -1, -1].abs().sum() > 0


def test_a_new_block_is_the_identity():
    x = torch.randn(2, 8, 16, 16)
    assert torch.equal(FourierBlock(8).eval()(x), x)


def test_fourier_block_exports_to_onnx_with_dynamic_sizes():
    ort = pytest.importorskip("onnxruntime")
    b = _random_block()
    buf = io.BytesIO()
    dyn = {0: "b", 2: "h", 3: "w"}
    torch.onnx.export(b, torch.randn(1, 8, 16, 16), buf, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False, dynamic_axes={"x": dyn, "y": dyn})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for size in [(16, 16), (24, 40), (9, 13)]:  # other sizes than the export's, odd ones too
        x = torch.randn(2, 8, *size)
        with torch.no_grad():
            ref = b(x).numpy()
        assert np.abs(sess.run(None, {"x": x.numpy()})[0] - ref).max() < 1e-3


class TestFourierInpainter(TestInpainter):
    """Every inpainter property holds with Fourier blocks in the network."""

    def make(self, **kw):
        return tiny(Inpainter, **{"fourier_blocks": 2, "fourier_level": 2, **kw})

    def test_blocks_are_in_the_weights(self):
        assert any(k.startswith("net.fourier.") for k in self.make().state_dict())

    def test_bad_level_is_one_clear_error(self):
        with pytest.raises(ValueError, match="fourier_level"):
            self.make(fourier_level=9)


def test_init_from_a_stage_without_blocks_keeps_its_predictions(tmp_path):
    from pipeline.training import TrainingError
    from pipeline.training.state import _init_from
    b = make_batch()
    plain = tiny(Inpainter)
    torch.nn.init.normal_(plain.net.segmentation_head[0].weight, std=0.1)  # not just Telea
    plain.save(tmp_path / "plain")
    ffc = tiny(Inpainter, fourier_blocks=2, fourier_level=2)
    _init_from(ffc, tmp_path / "plain")
    assert torch.allclose(ffc.eval().predict(b["gray"], b["mask"]), plain.predict(b["gray"], b["mask"]), atol=1e-6)
    ffc.save(tmp_path / "ffc")
    with pytest.raises(TrainingError, match="init_from.*lacks"):
        _init_from(tiny(Inpainter), tmp_path / "ffc")          # the other way round drops weights
    with pytest.raises(TrainingError, match="shape"):
        _init_from(tiny(Inpainter, decoder_channels=[16, 8, 4]), tmp_path / "plain")


@pytest.mark.parametrize("k", range(8))
def test_dihedral_inverse(k):
    x = torch.arange(2 * 5 * 7.).view(1, 2, 5, 7)
    y = dihedral(x, k)
    assert y.shape[-2:] == ((7, 5) if k & 4 else (5, 7))
    assert torch.equal(dihedral(y, k, inverse=True), x)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_tta_mean_is_exact_for_an_equivariant_fn_and_averages_otherwise(n):
    x = torch.rand(2, 1, 6, 9)
    assert torch.allclose(tta_mean(lambda t: t * 2, (x,), n), x * 2)
    ramp = lambda t: t + torch.arange(t.shape[-1], dtype=t.dtype)  # noqa: E731  not flip-equivariant
    out = tta_mean(ramp, (x,), n)
    assert out.shape == x.shape
    assert torch.allclose(out, ramp(x)) == (n == 1)
    with pytest.raises(ValueError, match="tta"):
        tta_mean(ramp, (x,), 3)


@pytest.mark.slow  # every TTA size on three stages
def test_stage_tta_on_non_square_inputs_and_the_old_flip_key(tmp_path):
    import yaml
    b = make_batch(1)
    g, m = b["gray"][..., :40, :56], b["mask"][..., :40, :56]
    for n in (2, 8):
        col = tiny(Colorizer, tta=n)
        assert col.predict_ab(g).shape == (1, 2, 40, 56)
        inp = tiny(Inpainter, tta=n)
        out = inp.predict(g, m)
        assert out.shape == g.shape and torch.equal(out[m == 0], g[m == 0])
    for flip, tta in ((True, 2), (False, 1)):  # checkpoints written before `tta` said flip_tta
        tiny(Colorizer).save(tmp_path / "c")
        meta = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
        meta["config"].pop("tta")
        meta["config"]["flip_tta"] = flip
        (tmp_path / "c" / "config.yaml").write_text(yaml.safe_dump(meta))
        old = Colorizer.load(tmp_path / "c")
        assert old.config["tta"] == tta and "flip_tta" not in old.config
    with pytest.raises(ValueError, match="tta"):
        tiny(Inpainter, tta=3)


@pytest.mark.slow  # eight views
def test_mask_detector_tta_averages_the_flipped_probabilities():
    from stages import MaskDetector
    g = make_batch(1)["gray"][..., :40, :56]
    plain, mirrored = tiny(MaskDetector), tiny(MaskDetector, tta=2)
    mirrored.load_state_dict(plain.state_dict())
    with torch.inference_mode():
        one = plain.detail_probabilities(g)
        flip = plain.detail_probabilities(g.flip(-1)).flip(-1)
        assert torch.allclose(mirrored.detail_probabilities(g), (one + flip) / 2, atol=1e-6)
        assert not torch.allclose(one, flip, atol=1e-3)  # (so the average is a different map)
        assert tiny(MaskDetector, tta=8).probabilities(g).shape == g.shape
    with pytest.raises(ValueError, match="tta"):
        tiny(MaskDetector, tta=3)


@pytest.mark.slow  # ONNX and OpenVINO exports
def test_inpainter_with_blocks_runs_in_every_engine():
    """The exported network (a deep copy) carries the blocks: engines match torch at other sizes."""
    import importlib.util
    st = tiny(Inpainter, fourier_blocks=2, fourier_level=2)
    for b in st.net.fourier:
        torch.nn.init.normal_(b.proj.weight, std=0.2)
    torch.nn.init.normal_(st.net.segmentation_head[0].weight, std=0.2)  # zero at init (Telea start)
    x = torch.rand(2, 2, 64, 96)
    with torch.no_grad():
        ref = st.net(x)
        hooked = st.net.encoder(x)[2]
        plain = type(st.net.encoder).forward(st.net.encoder, x)[2]  # the same call without the hook
    assert not torch.allclose(hooked, plain, atol=1e-3)  # the blocks act
    engines = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for engine in engines:
        st.use_runtime(st.export_onnx(), engine, "fp32")
        assert torch.allclose(st.run_net(x), ref, atol=1e-4), engine
    st.use_runtime(None)
