"""What makes a first GPU run slow or fragile, shown on the CPU (issue 31): no host read inside a
training step, the right precision and backend flags for the target GPU, and one-line refusals of
launches that would silently go wrong."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages import Colorizer, Inpainter, MaskDetector
from stages.processors import TeleaPrefill
from tests.conftest import tiny
from tests.test_stages import make_batch

STEPS = {  # every loss term the shipped recipes use
    MaskDetector: {},
    Inpainter: {"hole_ssim_weight": 2.0, "fourier_blocks": 1, "fourier_level": 2},
    Colorizer: {"hue_weight": 2.0, "hue_target": "full", "hole_weight": 2.0},
}


@pytest.mark.parametrize("cls", list(STEPS), ids=lambda c: c.__name__)
def test_a_training_step_never_reads_the_device_from_the_host(cls):
    """On the meta device every value is unknown: ``.item()``, ``tolist()``, ``int(t)`` or a
    boolean index (what stalls a GPU's host every step) raise there. One step must run whole."""
    st = tiny(cls, **STEPS[cls]).train()
    batch = make_batch(2, 64)
    batch["prefilled"] = TeleaPrefill()(batch["gray"], batch["mask"])  # from the loader workers
    st = st.to("meta")
    out = st.loss({k: v.to("meta") for k, v in batch.items()})
    out["loss"].backward()
    assert out["loss"].device.type == "meta"
    assert all(p.grad is not None for n, p in st.named_parameters() if not n.startswith("net.encoder"))


def _hole_ssim_loop(pred, target, mask, win=7):
    """The former per-image implementation (a host read and a boolean index per image)."""
    c1, c2, cov = 0.01 ** 2, 0.03 ** 2, win / (win - 1)
    vals = []
    for p, t, m in zip(pred, target, mask):
        sel = m.flatten() > 0.5
        if int(sel.sum()) < win:
            continue
        x, y = p.flatten()[sel][None, None], t.flatten()[sel][None, None]
        mean = lambda v: F.avg_pool1d(v, win, 1)  # noqa: E731
        ux, uy = mean(x), mean(y)
        vx, vy, vxy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy), cov * (mean(x * y) - ux * uy)
        vals.append((((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))).mean())
    return torch.stack(vals).mean() if vals else pred.new_ones(())


def test_the_sync_free_hole_ssim_is_the_per_image_one():
    from stages.inpaint import hole_ssim
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 1, 32, 40, generator=g), torch.rand(3, 1, 32, 40, generator=g)
    mask = (torch.rand(3, 1, 32, 40, generator=g) > 0.6).float()
    mask[1] = 0
    mask[1, 0, 5, :4] = 1                           # a hole of 4 px: fewer than the window, skipped
    assert torch.allclose(hole_ssim(pred, target, mask), _hole_ssim_loop(pred, target, mask), atol=1e-6)
    assert float(hole_ssim(pred, target, torch.zeros_like(mask))) == 1.0
    p = pred.clone().requires_grad_()
    hole_ssim(p, target, mask).backward()
    assert p.grad[mask == 0].abs().max() == 0 and p.grad[mask > 0].abs().max() > 0


def test_colour_constants_and_the_ssim_window_are_made_once_per_device():
    from stages import color
    from stages.inpaint import _ssim_window
    color.rgb_to_lab(torch.rand(1, 3, 8, 8))
    before = color._on.cache_info()
    color.lab_to_rgb(color.rgb_to_lab(torch.rand(1, 3, 8, 8)))
    after = color._on.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    assert _ssim_window(11, torch.device("cpu")) is _ssim_window(11, torch.device("cpu"))


@pytest.mark.parametrize("capability,want", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_on_a_gpu_follows_its_compute_capability(monkeypatch, capability, want):
    """A T4 or V100 says ``is_bf16_supported()`` (emulated, slow): auto must pick fp16 there."""
    from pipeline.device import resolve_precision
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert resolve_precision("auto", torch.device("cuda", 0)) == want


@pytest.fixture
def backend_flags():
    keep = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = keep


def test_training_on_cuda_sets_cudnn_benchmark_and_fp32_inference_turns_tf32_off(backend_flags):
    from pipeline import engines
    from pipeline.device import configure_training
    torch.backends.cudnn.benchmark = False
    configure_training(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    configure_training(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    engines.install(tiny(MaskDetector), "mask", "torch", "fp32", torch.device("cuda", 0))  # no GPU needed to choose
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


def test_torchrun_without_ddp_is_refused_in_one_line(monkeypatch):
    from pipeline.training import Distributed, TrainingError
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(TrainingError, match="4 processes.*trainer.strategy=ddp"):
        Distributed("single", torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert Distributed("single", torch.device("cpu")).world == 1


def test_ranks_that_resume_at_different_steps_stop_in_one_line(tmp_path):
    from pipeline.training import Distributed, TrainingError

    class TwoRanks:  # all_reduce over this rank's state and another rank's
        class ReduceOp:
            MIN, MAX = "min", "max"

        def __init__(self, other):
            self.other = torch.tensor(other, dtype=torch.float64)

        def all_reduce(self, t, op):
            t.copy_(torch.minimum(t, self.other) if op == "min" else torch.maximum(t, self.other))

    d = Distributed("single", torch.device("cpu"))
    d.on = True
    d.td = TwoRanks([500, 500])
    d.agree_on_resume(500, 500, tmp_path)            # both found the same state: go on
    d.td = TwoRanks([0, 0])                          # the other node has no last/
    with pytest.raises(TrainingError, match="steps 0-500.*shares"):
        d.agree_on_resume(500, 500, tmp_path)


def test_loader_workers_use_one_opencv_thread():
    import signal

    import cv2

    from pipeline.training.inputs import _worker_init
    keep = cv2.getNumThreads(), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        cv2.setNumThreads(4)
        _worker_init(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(keep[0])
        signal.signal(signal.SIGINT, keep[1])
        signal.signal(signal.SIGTERM, keep[2])


def test_fourier_dfts_run_in_fp32_under_autocast(monkeypatch):
    from stages import fourier
    seen = []
    real = fourier.rdft2

    def spy(x):
        seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return real(x)
    monkeypatch.setattr(fourier, "rdft2", spy)
    block = fourier.FourierBlock(16).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(torch.rand(1, 16, 12, 10))
    assert seen == [(torch.float32, False)] and y.shape == (1, 16, 12, 10)


def test_the_optimizer_is_fused_on_cuda_only():
    from omegaconf import OmegaConf

    from pipeline.training import make_optimizer
    tc = OmegaConf.create({"lr": 1e-3, "weight_decay": 0.0})
    st = tiny(MaskDetector)
    assert make_optimizer(st, tc, torch.device("cuda", 0)).defaults["fused"] is True
    assert not make_optimizer(st, tc, torch.device("cpu")).defaults["fused"]


@pytest.mark.slow  # times training steps of two stages
def test_gpu_check_times_the_inpainter_with_the_loaders_prefill(monkeypatch):
    """tools/gpu_check.py must not time CPU Telea inside the training step."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []
    real = TeleaPrefill.__call__
    monkeypatch.setattr(TeleaPrefill, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    mod.train_rate(tiny(Inpainter), torch.device("cpu"), "fp32", 32, 2, 2)
    assert len(calls) == 2  # once per sample, before the timed steps; none inside them
    assert np.isfinite(mod.train_rate(tiny(MaskDetector), torch.device("cpu"), "fp32", 32, 2, 1))


def test_upstream_stages_run_in_the_loader_not_between_training_steps(tmp_path):
    """``upstream=``: the frozen stages' work (networks, mask post-processing, Telea) comes with
    each sample from the loader (its workers), so the training loop only moves batches."""
    from hydra import compose, initialize_config_dir

    from pipeline import Pipeline
    from pipeline.training import CONF_DIR, Trainer, UpstreamSample
    from tests.conftest import TINY_OVERRIDES
    Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter)).save(tmp_path / "up")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["stage=inpaint", f"upstream={tmp_path / 'up'}", f"out_dir={tmp_path / 'o'}",
                                          "trainer.num_workers=0", "trainer.image_size=64", "trainer.batch_size=2",
                                          "trainer.prepare_batches=0", "trainer.tensorboard=false", *TINY_OVERRIDES])
    tr = Trainer(cfg)
    assert isinstance(tr.train_loader.dataset.fn.first, UpstreamSample)
    batch = next(iter(tr.train_loader))
    assert {"prefilled", "mask"} <= set(batch)   # the upstream's mask, then the Telea prefill of it
    g8 = [(g[0].numpy() * 255).round().astype(np.uint8) for g in batch["gray"]]
    masks = tr.upstream.detect(g8)
    assert all(np.array_equal(m, b[0].numpy() > 0.5) for m, b in zip(masks, batch["mask"]))


def test_validation_inputs_take_the_training_memory_format(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from pipeline.training import CONF_DIR, Trainer
    from tests.conftest import TINY_OVERRIDES
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["stage=mask", f"out_dir={tmp_path}", "trainer.num_workers=0",
                                          "trainer.image_size=64", "trainer.batch_size=2", "trainer.val_batches=1",
                                          "trainer.channels_last=true", "trainer.tensorboard=false", *TINY_OVERRIDES])
    tr = Trainer(cfg)
    seen = []
    real = type(tr.stage).metrics
    monkeypatch.setattr(type(tr.stage), "metrics", lambda self, b: seen.append(
        b["rgb"].is_contiguous(memory_format=torch.channels_last) and not b["rgb"].is_contiguous()) or real(self, b))
    tr.validate()
    assert seen == [True]
