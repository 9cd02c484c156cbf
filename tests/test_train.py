"""A few real steps through ``python -m pipeline.train`` for each stage."""
import csv
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from stages import Colorizer, Inpainter, MaskDetector, Stage
from tests.conftest import TINY_OVERRIDES

BASE = ["trainer.batch_size=2", "trainer.image_size=64", "trainer.val_every=2", "trainer.val_batches=1",
        "trainer.log_every=1", "trainer.num_workers=0", "trainer.prepare_batches=1", *TINY_OVERRIDES]


def train(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "pipeline.train", *BASE, *args], capture_output=True, text=True,
                       timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for s in ("mask", "inpaint", "colorize"):
        train(f"stage={s}", "trainer.max_steps=3", f"out_dir={root / s}")
    return root


@pytest.mark.parametrize("stage,cls", [("mask", MaskDetector), ("inpaint", Inpainter), ("colorize", Colorizer)])
def test_train_writes_a_loadable_stage(trained, stage, cls):
    out = trained / stage
    st = cls.load(out)
    assert isinstance(st, Stage)
    cfg = yaml.safe_load((out / "train_config.yaml").read_text())
    assert cfg["stage"] == stage and cfg["trainer"]["max_steps"] == 3
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert any(r["tag"] == "train/loss" for r in rows) and any(r["tag"].startswith("val/") for r in rows)
    assert list((out / "samples").glob("step_*.png"))
    assert (out / "last" / "trainer_state.pt").is_file()


def test_resume_continues_the_step_count(trained, tmp_path):
    import shutil
    out = tmp_path / "m"
    shutil.copytree(trained / "mask", out)
    train("stage=mask", "trainer.max_steps=5", f"out_dir={out}", "resume=true")
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["tag"] == "train/loss"]
    assert steps == [1, 2, 3, 4, 5]


def test_inpaint_from_frozen_upstream_mask(trained, tmp_path):
    train("stage=inpaint", "trainer.max_steps=2", f"out_dir={tmp_path / 'i'}", f"upstream={trained / 'mask'}")
    assert Inpainter.load(tmp_path / "i")


def test_colorize_from_frozen_upstream_pipeline(trained, tmp_path):
    from pipeline import Pipeline
    Pipeline(mask=MaskDetector.load(trained / "mask"), inpaint=Inpainter.load(trained / "inpaint")).save(tmp_path / "up")
    train("stage=colorize", "trainer.max_steps=2", f"out_dir={tmp_path / 'c'}", f"upstream={tmp_path / 'up'}")
    assert Colorizer.load(tmp_path / "c")


def _online() -> bool:
    try:
        socket.create_connection(("download.pytorch.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(_online(), reason="the internet is reachable: the download would succeed")
def test_imagenet_weights_offline_fail_with_one_line(tmp_path):
    r = train("stage=mask", "trainer.max_steps=1", f"out_dir={tmp_path / 'x'}", "model.encoder_name=resnet18",
              "model.encoder_depth=3", "model.encoder_weights=imagenet", check=False)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "encoder_weights" in err[0] and "Traceback" not in r.stderr


def test_unknown_data_root_is_one_line(tmp_path):
    r = train("stage=mask", "data=photos", "data.root=/no/such/folder", f"out_dir={tmp_path / 'y'}", check=False)
    assert r.returncode != 0 and "/no/such/folder" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_to_the_process_group_saves_and_resume_continues(tmp_path):
    import os
    import signal
    import time

    import torch
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "pipeline.train", *BASE, "stage=mask", "trainer.max_steps=100000",
           "trainer.num_workers=1", "trainer.val_every=100000", "trainer.ckpt_every=100000", f"out_dir={out}"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        rows = list(csv.DictReader(open(out / "metrics.csv"))) if (out / "metrics.csv").is_file() else []
        if sum(r["tag"] == "train/loss" for r in rows) >= 3:
            break
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group, workers too
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGINT, err[-2000:]
    step = torch.load(out / "last" / "trainer_state.pt", weights_only=True)["step"]
    assert step >= 3 and MaskDetector.load(out)
    train("stage=mask", f"trainer.max_steps={step + 2}", f"out_dir={out}", "resume=true")
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["tag"] == "train/loss"]
    assert steps == list(range(1, step + 3))


def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    import re
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                        "-m", "pipeline.train", *BASE, "stage=inpaint", "trainer.max_steps=4", "trainer.strategy=ddp",
                        "trainer.device=cpu", "trainer.threads=1", f"out_dir={out}"],
                       capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    digests = dict(re.findall(r"rank (\d)/2 final weights sha1 ([0-9a-f]+)", text))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    steps = [int(x["step"]) for x in csv.DictReader(open(out / "metrics.csv")) if x["tag"] == "train/loss"]
    assert steps == [1, 2, 3, 4]  # rank 0 alone writes the log
    assert Inpainter.load(out)


def test_ddp_without_torchrun_is_one_line(tmp_path):
    r = train("stage=mask", "trainer.max_steps=1", "trainer.strategy=ddp", f"out_dir={tmp_path / 'z'}", check=False)
    assert r.returncode == 2 and "torchrun" in r.stderr and "Traceback" not in r.stderr


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from pipeline.train import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*BASE, "trainer.progress=false", "trainer.tensorboard=false",
                                           *overrides])


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_non_finite_loss_stops_with_a_message_or_is_skipped(tmp_path, monkeypatch, mode):
    import torch

    from pipeline.train import TrainingError, run
    calls = {"n": 0}
    real = MaskDetector.loss

    def flaky(self, batch):
        out = real(self, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out
    monkeypatch.setattr(MaskDetector, "loss", flaky)
    cfg = _compose("stage=mask", "trainer.max_steps=4", f"trainer.nonfinite={mode}", f"out_dir={tmp_path}")
    if mode == "stop":
        with pytest.raises(TrainingError, match=r"step 2: loss is nan .*trainer.nonfinite=skip"):
            run(cfg)
        assert torch.load(tmp_path / "last" / "trainer_state.pt", weights_only=True)["step"] == 2
    else:
        run(cfg)
        steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "metrics.csv")) if r["tag"] == "train/loss"]
        assert steps == [1, 2, 3, 4] and calls["n"] == 5  # the bad batch was skipped, 4 good steps


def test_kill_9_loses_at_most_one_save_interval(tmp_path):
    import os
    import signal
    import time

    import torch
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "pipeline.train", *BASE, "stage=mask", "trainer.max_steps=100000",
           "trainer.val_every=100000", "trainer.ckpt_every=3", f"out_dir={out}"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    logged = 0
    while time.time() < deadline and logged < 7:
        rows = list(csv.DictReader(open(out / "metrics.csv"))) if (out / "metrics.csv").is_file() else []
        logged = max([int(r["step"]) for r in rows if r["tag"] == "train/loss"] or [0])
        time.sleep(0.3)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    saved = torch.load(out / "last" / "trainer_state.pt", weights_only=True)["step"]
    assert saved % 3 == 0 and logged - saved < 3 + 2  # one interval (+ steps logged while dying)
    train("stage=mask", f"trainer.max_steps={saved + 2}", f"out_dir={out}", "resume=true")
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["tag"] == "train/loss"]
    assert steps == list(range(1, saved + 3))  # rows after the checkpoint were dropped, then continued


def test_resumed_run_replays_the_same_stream_and_ends_identical(tmp_path):
    """2 steps + resume to 4 == 4 steps straight (constant lr so the schedule does not depend on
    where the first run stopped), even with a different number of loader workers."""
    from safetensors.torch import load_file
    const = ["trainer.warmup_steps=0", "trainer.min_lr_ratio=1.0", "trainer.precision=fp32"]
    train("stage=mask", "trainer.max_steps=4", f"out_dir={tmp_path / 'a'}", *const)
    train("stage=mask", "trainer.max_steps=2", f"out_dir={tmp_path / 'b'}", *const)
    half = load_file(tmp_path / "b" / "model.safetensors")
    train("stage=mask", "trainer.max_steps=4", f"out_dir={tmp_path / 'b'}", "resume=true", "trainer.num_workers=1",
          *const)
    a, b = (load_file(tmp_path / r / "model.safetensors") for r in ("a", "b"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(half[k], a[k]) for k in a)  # it did train on
