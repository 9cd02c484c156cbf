"""The inference-engine backends (ONNX Runtime, OpenVINO) and the export command."""
import numpy as np
import pytest

from pipeline import Pipeline
from pipeline.color import pil_gray
from pipeline.damage import apply_damage, random_damage
from stages import Colorizer, Inpainter, MaskDetector
from tests.conftest import colourful, tiny

ort = pytest.importorskip("onnxruntime")


def _pipe(**opts):
    return Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer), **opts)


@pytest.mark.slow  # exports and runs engines
def test_onnx_backend_matches_torch_fp32():
    gray = apply_damage(pil_gray(colourful(96, 80)), random_damage(96, 80, np.random.default_rng(1)))
    a = _pipe(precision="fp32").restore(gray, return_intermediates=True)
    b = _pipe(backend="onnx").restore(gray, return_intermediates=True)
    assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask))
    diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


@pytest.mark.slow  # exports and runs engines
def test_backend_survives_save_load_and_swapping(tmp_path):
    pipe = _pipe(backend="onnx")
    pipe.restore(np.full((64, 64), 120, np.uint8))
    assert pipe.colorize.runtime == "onnxruntime-fp32"
    pipe.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert loaded.backend == "onnx" and not list((tmp_path / "p").rglob("*.onnx"))
    loaded.colorize = tiny(Colorizer, temperature=0.2)  # a swapped stage is exported on first use
    loaded.restore(np.full((64, 64), 120, np.uint8))
    assert loaded.colorize.runtime == "onnxruntime-fp32"
    loaded.backend = "torch"
    loaded.restore(np.full((64, 64), 120, np.uint8))
    assert loaded.colorize.runtime is None


def test_unknown_backend_is_one_clear_error():
    with pytest.raises(ValueError, match="backend"):
        _pipe(backend="tensorrt")


@pytest.mark.slow  # exports and runs engines
def test_export_command_writes_runnable_models(tmp_path, capsys):
    from pipeline.export import main
    _pipe().save(tmp_path / "p")
    assert main(["--checkpoint", str(tmp_path / "p"), "--out", str(tmp_path / "onnx")]) == 0
    for slot, c in (("mask", 1), ("inpaint", 2), ("colorize", 1)):
        sess = ort.InferenceSession(str(tmp_path / "onnx" / f"{slot}.onnx"), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": np.zeros((2, c, 64, 96), np.float32)})[0]
        assert y.shape[0] == 2 and y.shape[-1] in (96, 24)  # colorize: a head_stride-4 grid
    assert main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_auto_backend_prefers_openvino_then_onnx_on_cpu(monkeypatch):
    import importlib.util

    from pipeline import engines as pl
    have_ov = importlib.util.find_spec("openvino") is not None
    pipe = _pipe(backend="auto", precision="fp32")
    pipe.restore(np.full((64, 64), 120, np.uint8))
    want = "openvino-fp32" if have_ov else "onnxruntime-fp32"
    assert all(s.runtime == want for s in pipe.stages.values())
    # without openvino, auto falls back to onnxruntime
    monkeypatch.setattr(pl, "installed", lambda b: b == "onnx")
    pipe.restore(np.full((64, 64), 120, np.uint8))
    assert all(s.runtime == "onnxruntime-fp32" for s in pipe.stages.values())


@pytest.mark.slow  # exports and runs engines
def test_openvino_fp32_matches_torch_and_bf16_stays_close():
    pytest.importorskip("openvino")
    gray = apply_damage(pil_gray(colourful(96, 80)), random_damage(96, 80, np.random.default_rng(1)))
    a = _pipe(precision="fp32").restore(gray, return_intermediates=True)
    b = _pipe(backend="openvino", precision="fp32").restore(gray, return_intermediates=True)
    assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask))
    diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    # bf16 (where the CPU lacks it OpenVINO emulates or falls back): the networks' outputs move a
    # little, the result is still a valid restoration of the same gray
    pipe = _pipe(backend="openvino", precision="bf16")
    c = pipe.restore(gray, mask=np.asarray(a.mask) > 0, return_intermediates=True)
    from pipeline.device import cpu_has_bf16
    assert pipe.inpaint.runtime == ("openvino-bf16" if cpu_has_bf16() else "openvino-fp32")
    lum = np.asarray(c.image.convert("L"), np.int16)
    assert np.abs(lum - np.asarray(c.gray, np.int16)).max() <= 1
    assert np.abs(np.asarray(c.gray, np.int16) - np.asarray(a.gray, np.int16)).mean() < 2


@pytest.mark.slow  # exports and runs engines
def test_engine_outputs_match_the_torch_network():
    """Each engine, on each stage, computes the torch network (fp32: to float tolerance)."""
    import importlib.util
    import torch
    engines = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for cls in (MaskDetector, Inpainter, Colorizer):
        stage = tiny(cls).eval()
        x = torch.rand(2, stage.net_in_channels, 64, 96)
        with torch.no_grad():
            ref = stage.net(x)
        for engine in engines:
            stage.use_runtime(stage.export_onnx(), engine, "fp32")
            assert stage.runtime == f"{engine}-fp32"
            y = stage.run_net(x)
            assert y.shape == ref.shape and torch.allclose(y, ref, atol=1e-4), (cls.__name__, engine)
        stage.use_runtime(None)
        assert stage.runtime is None and torch.equal(stage.run_net(x), ref)


def test_importing_the_package_shortens_openmp_spinning_unless_the_user_chose():
    import os
    import subprocess
    import sys
    code = "import stages, os; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "10000"
    env["GOMP_SPINCOUNT"] = "77"
    out = subprocess.run([sys.executable, "-c", code.replace("stages", "pipeline")], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "77"


def test_unknown_engine_and_bad_precision_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        tiny(MaskDetector).use_runtime(b"", "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        _pipe(precision="fp64")
    with pytest.raises(ValueError, match="unknown slot"):
        _pipe(precision={"colour": "fp32"})


def test_openvino_bf16_only_where_the_cpu_has_it(monkeypatch):
    pytest.importorskip("openvino")
    from pipeline import engines as pl
    pipe = _pipe(backend="openvino", precision="bf16")
    monkeypatch.setattr(pl, "cpu_has_bf16", lambda: False)
    assert pipe.engine("inpaint") == ("openvino", "fp32")
    monkeypatch.setattr(pl, "cpu_has_bf16", lambda: True)
    assert pipe.engine("inpaint") == ("openvino", "bf16")
    pipe.precision = {"inpaint": "fp32", "mask": "bf16"}
    assert pipe.engine("inpaint") == ("openvino", "fp32") and pipe.engine("mask") == ("openvino", "bf16")
