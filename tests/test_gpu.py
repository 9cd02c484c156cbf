"""The CUDA paths: training with AMP (bf16, fp16) and channels_last, DDP over NCCL, and restoring
on the GPU. Marked ``gpu``; every test skips where torch sees no CUDA device (``-m gpu`` selects them
on a GPU machine, ``tools/gpu_check.py`` times the same paths)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")]
GPU = ["trainer=gpu", "trainer.batch_size=4", "trainer.image_size=64", "trainer.num_workers=0",
       "trainer.val_every=3", "trainer.val_batches=1", "trainer.log_every=1", "trainer.prepare_batches=1",
       "trainer.max_steps=3", "trainer.progress=false", *TINY_OVERRIDES]


def _train(*args, launcher=(sys.executable, "-m", "pipeline.train")):
    r = subprocess.run([*launcher, *GPU, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


BRANCH = ["model.hint_branch=tu-mobilenetv3_small_050", "model.hint_none=0.0"]  # a hint branch over a frozen base


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("stage", ["mask", "inpaint", "colorize", "colorize+branch"])
def test_train_on_cuda_with_amp(tmp_path, stage, precision):
    import csv

    from stages import Stage
    extra = BRANCH if stage == "colorize+branch" else []
    stage = stage.split("+")[0]
    _train(f"stage={stage}", f"trainer.precision={precision}", f"out_dir={tmp_path}", *extra)
    losses = [float(r["value"]) for r in csv.DictReader(open(tmp_path / "metrics.csv")) if r["tag"] == "train/loss"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert Stage.load(tmp_path).name == {"mask": "mask", "inpaint": "inpaint", "colorize": "colorize"}[stage]


def test_ddp_over_nccl_on_one_gpu(tmp_path):
    import re
    r = _train("stage=inpaint", "trainer.strategy=ddp", f"out_dir={tmp_path}",
               launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_port=29561",
                         "-m", "pipeline.train"))
    assert re.search(r"rank 0/1 final weights sha1 [0-9a-f]+", r.stdout + r.stderr)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_ddp_over_nccl_on_two_gpus_keeps_the_ranks_equal(tmp_path):
    """Two ranks, one GPU each: DDP's bucketed all-reduce keeps their weights bit-equal."""
    import re
    r = _train("stage=colorize", "trainer.strategy=ddp", f"out_dir={tmp_path}",
               launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29562",
                         "-m", "pipeline.train"))
    digests = re.findall(r"rank (\d)/2 final weights sha1 ([0-9a-f]+)", r.stdout + r.stderr)
    assert len(digests) == 2 and digests[0][1] == digests[1][1]


def test_cuda_restore_matches_the_cpu():
    from pipeline import Pipeline
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    from tests.conftest import colourful
    gray = apply_damage(pil_gray(colourful(256, 256)), random_damage(256, 256, np.random.default_rng(3)))
    cpu = Pipeline.load("demo", backend="torch", precision="fp32").restore(gray, return_intermediates=True)
    gpu_pipe = Pipeline.load("demo", device="cuda")
    assert gpu_pipe.engine("inpaint")[0] is None  # torch on the GPU
    gpu = gpu_pipe.restore(gray, return_intermediates=True)
    assert np.array_equal(np.asarray(cpu.mask), np.asarray(gpu.mask))
    assert np.abs(np.asarray(cpu.gray, np.int16) - np.asarray(gpu.gray, np.int16)).mean() < 2
    assert np.abs(np.asarray(cpu.image, np.int16) - np.asarray(gpu.image, np.int16)).mean() < 4
