"""``pipeline.engines``: the on-disk engine cache and ``precision="auto"`` measured per CPU."""
import numpy as np
import pytest
import torch

from pipeline import Pipeline, engines
from stages import Colorizer, Inpainter, MaskDetector
from tests.conftest import TINY, tiny


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_PIPELINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_timers(ms: dict, calls: list):
    def timers(stage, engine, model):
        def make(p):
            def run(x):
                calls.append(p)
                import time
                time.sleep(ms[p] / 1000)
            return run
        return {p: make(p) for p in ("fp32", "bf16")}
    return timers


@pytest.mark.parametrize("ms,choice", [({"fp32": 8, "bf16": 2}, "bf16"), ({"fp32": 2, "bf16": 8}, "fp32")])
def test_auto_precision_is_the_measured_faster_one_and_is_remembered_per_cpu(cache, monkeypatch, ms, choice):
    calls = []
    monkeypatch.setattr(engines, "_timers", _fake_timers(ms, calls))
    stage = tiny(Inpainter)
    assert engines.fastest_precision(stage, None) == choice and calls
    n = len(calls)
    assert engines.fastest_precision(stage, None) == choice and len(calls) == n  # read back, not timed
    assert (cache / "precision.json").is_file()
    monkeypatch.setattr(engines, "cpu_model", lambda: "another CPU")
    engines.fastest_precision(stage, None)
    assert len(calls) > n  # a different CPU model is measured anew


def test_pipeline_auto_uses_the_measured_choice_per_slot(cache, monkeypatch):
    from pipeline import engines as pl
    monkeypatch.setattr(pl, "cpu_has_bf16", lambda: True)
    chosen = {Inpainter: "fp32", MaskDetector: "bf16", Colorizer: "bf16"}
    monkeypatch.setattr(engines, "fastest_precision", lambda stage, engine, model=None: chosen[type(stage)])
    pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer),
                    backend="torch", precision={"mask": "fp32", "inpaint": "auto", "colorize": "auto"})
    assert pipe.engine("inpaint") == (None, "fp32") and pipe.engine("colorize") == (None, "bf16")
    assert pipe.engine("mask") == (None, "fp32")  # an explicit fp32 is never measured away
    pipe.backend = "onnx"
    assert pipe.engine("colorize") == ("onnxruntime", "fp32")


def test_without_bf16_auto_is_fp32_and_nothing_is_measured(cache, monkeypatch):
    from pipeline import device
    from pipeline import engines as pl
    monkeypatch.setattr(pl, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(engines, "fastest_precision", lambda *a, **k: pytest.fail("measured"))
    pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), backend="torch", precision="auto")
    assert pipe.engine("inpaint") == (None, "fp32")


@pytest.mark.slow  # exports or compiles engines (or starts a process)
def test_onnx_export_is_cached_by_digest_and_matches_a_fresh_export(cache):
    ort = pytest.importorskip("onnxruntime")  # noqa: F841
    stage = tiny(MaskDetector)
    d = engines.stage_digest(stage)
    first = engines.onnx_model(stage, d)
    assert first.is_file() and first.read_bytes() == stage.export_onnx()
    assert engines.onnx_model(stage, d) == first
    other = tiny(MaskDetector, threshold=0.3)
    assert engines.stage_digest(other) != d  # config is part of the key
    with torch.no_grad():
        stage.net[0].weight.add_(1) if isinstance(stage.net, torch.nn.Sequential) else \
            next(stage.parameters()).add_(1)
    assert engines.stage_digest(stage) != d  # so are the weights


@pytest.mark.slow  # exports or compiles engines (or starts a process)
def test_a_pipeline_restores_with_the_cache_off_or_unwritable(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    gray = np.full((64, 64), 120, np.uint8)
    gray[20:30, 20:40] = 40
    results = []
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for value in ("off", str(blocker / "sub")):
        monkeypatch.setenv("RESTORE_PIPELINE_CACHE", value)
        assert engines._usable(engines.cache_dir()) is None
        pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer), backend="onnx")
        results.append(np.asarray(pipe.restore(gray)))
        assert isinstance(engines.onnx_of(pipe.colorize), bytes)
    assert np.array_equal(*results)


@pytest.mark.slow  # exports or compiles engines (or starts a process)
def test_openvino_fills_its_compile_cache(cache):
    pytest.importorskip("openvino")
    pipe = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer),
                    backend="openvino", precision="fp32")
    pipe.restore(np.full((64, 64), 120, np.uint8))
    names = {f.name.split("-")[0] for f in (cache / "onnx").glob("*.onnx")}
    assert {"maskdetector", "colorizer"} <= names
    assert any((cache / "openvino").iterdir())


_FIRST_INFERS_AT_ONCE = """
import threading, numpy as np, torch
from stages.runtimes import OpenVINORuntime, export_onnx
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1))
rt = OpenVINORuntime(export_onnx(net, 1), "fp32", 1)
barrier = threading.Barrier(6)
def first_infer():
    barrier.wait()
    rt(np.zeros((1, 1, 32, 32), np.float32))
threads = [threading.Thread(target=first_infer) for _ in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


@pytest.mark.slow  # exports or compiles engines (or starts a process)
def test_openvino_first_infers_from_several_threads_at_once_do_not_hang():
    """An album restores batches in threads (``--jobs``): their first OpenVINO calls come at once,
    which hung pybind11's one-time numpy set-up in ~1 of 4 fresh processes before the runtime did it
    itself. Each try is a new process (the set-up happens once per process)."""
    import subprocess
    import sys
    pytest.importorskip("openvino")
    for _ in range(5):
        try:
            subprocess.run([sys.executable, "-c", _FIRST_INFERS_AT_ONCE], check=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("six threads' first OpenVINO infers hung")


@pytest.mark.slow  # exports or compiles engines
@pytest.mark.parametrize("cls,kw", [(MaskDetector, {}), (Inpainter, {"fourier_blocks": 1}), (Colorizer, {}),
                                    (Colorizer, {"hint_branch": TINY["encoder_name"]})])
def test_a_deferred_network_is_the_saved_one_when_built_and_keys_the_same_cache(cls, kw, tmp_path):
    saved = tiny(cls, **kw)
    with torch.no_grad():  # weights unlike a fresh build's, so loading them is seen
        for p in saved.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    saved.save(tmp_path / "s", dtype=torch.float16)
    eager, lazy = cls.load(tmp_path / "s"), cls.load(tmp_path / "s", defer_net=True)
    assert lazy.deferred and not eager.deferred and "net" not in lazy._modules
    assert engines.stage_digest(lazy) == engines.stage_digest(eager)
    assert lazy.deferred  # the digest did not build it
    gray = torch.rand(1, 1, 64, 64)
    inputs = (gray, (gray > 0.8).float()) if cls is Inpainter else (gray,)
    if kw.get("hint_branch"):  # both networks deferred, both built at first use
        assert "hint_net" not in lazy._modules
        inputs = (gray, torch.cat([torch.rand(1, 2, 64, 64), (torch.rand(1, 1, 64, 64) > 0.9).float()], 1))
    with torch.no_grad():
        assert torch.equal(lazy(*inputs), eager(*inputs))  # the torch path builds it at first use
    assert not lazy.deferred
    ours, theirs = lazy.state_dict(), eager.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not lazy.training and not lazy.net.training


@pytest.mark.slow  # exports or compiles engines (or starts a process)
def test_a_deferred_stage_moved_or_saved_builds_its_network_first(tmp_path):
    tiny(MaskDetector).save(tmp_path / "m")
    lazy = MaskDetector.load(tmp_path / "m", defer_net=True)
    assert lazy.to("cpu") is lazy and lazy.deferred  # nothing to move
    lazy.double()
    assert not lazy.deferred and next(lazy.net.parameters()).dtype == torch.float64
    lazy = MaskDetector.load(tmp_path / "m", defer_net=True).freeze()
    lazy.save(tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "m" / "model.safetensors").read_bytes()
    assert not any(p.requires_grad for p in lazy.parameters())


_WARM_START = """
import sys, numpy as np
from pipeline import Pipeline
pipe = Pipeline.load(sys.argv[1])
gray = np.full((64, 64), 120, np.uint8)
gray[20:30, 20:40] = 40
np.save(sys.argv[2], np.asarray(pipe.restore(gray)))
print(sorted(k for k, s in pipe.stages.items() if not s.deferred), "segmentation_models_pytorch" in sys.modules)
"""


@pytest.mark.slow  # exports or compiles engines (or starts a process)
def test_a_warm_engine_cache_starts_without_building_a_torch_network(cache, tmp_path):
    """The CLI's start-up (issue 32): with the ONNX export and the compiled model cached, a new
    process restores without importing segmentation-models-pytorch (and torchvision with it)."""
    import os
    import subprocess
    import sys
    pytest.importorskip("openvino")
    Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer), backend="openvino",
             precision="fp32").save(tmp_path / "p")
    env = {**os.environ, "RESTORE_PIPELINE_CACHE": str(cache)}
    runs = [subprocess.run([sys.executable, "-c", _WARM_START, str(tmp_path / "p"), str(tmp_path / f"{i}.npy")],
                           env=env, capture_output=True, text=True, check=True).stdout.split("\n")[-2]
            for i in range(2)]
    assert runs[0] == "['colorize', 'inpaint', 'mask'] True"  # cold: exported from the torch networks
    assert runs[1] == "[] False"                                # warm: none built, none imported
    assert np.array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy"))
