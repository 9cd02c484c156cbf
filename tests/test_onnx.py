"""The ONNX Runtime backend and the export command."""
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


def test_onnx_backend_matches_torch_fp32():
    gray = apply_damage(pil_gray(colourful(96, 80)), random_damage(96, 80, np.random.default_rng(1)))
    a = _pipe(precision="fp32").restore(gray, return_intermediates=True)
    b = _pipe(backend="onnx").restore(gray, return_intermediates=True)
    assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask))
    diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_backend_survives_save_load_and_swapping(tmp_path):
    pipe = _pipe(backend="onnx")
    pipe.restore(np.full((64, 64), 120, np.uint8))
    assert "_ort" in pipe.colorize.__dict__
    pipe.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert loaded.backend == "onnx" and not list((tmp_path / "p").rglob("*.onnx"))
    loaded.colorize = tiny(Colorizer, temperature=0.2)  # a swapped stage is exported on first use
    loaded.restore(np.full((64, 64), 120, np.uint8))
    assert "_ort" in loaded.colorize.__dict__
    loaded.backend = "torch"
    loaded.restore(np.full((64, 64), 120, np.uint8))
    assert "_ort" not in loaded.colorize.__dict__


def test_unknown_backend_is_one_clear_error():
    with pytest.raises(ValueError, match="backend"):
        _pipe(backend="tensorrt")


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


def test_auto_backend_uses_onnx_on_cpu_when_installed():
    pipe = _pipe(backend="auto")
    pipe.restore(np.full((64, 64), 120, np.uint8))
    assert all("_ort" in s.__dict__ for s in pipe.stages.values())
