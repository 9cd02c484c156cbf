"""The restore CLI and the evaluation entry point."""
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.evaluate import evaluate
from tests.test_config import make_dacon


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory, tiny_pipeline):
    d = tmp_path_factory.mktemp("pipe")
    tiny_pipeline.save(d)
    return d


def _damaged_photo(seed: int, size: int = 384) -> np.ndarray:
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    from tests.conftest import colourful
    return apply_damage(pil_gray(colourful(size, size, seed)), random_damage(size, size, np.random.default_rng(seed)))


def restore_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.restore", "--no-progress", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_restore_folder_csv_zip_and_bad_inputs(pipe_dir, tmp_path):
    root = make_dacon(tmp_path / "d", n=3, size=48)
    (root / "test.csv").write_text("ID,input_image_path\nT0,./train_input/TRAIN_00000.png\nT1,./train_input/TRAIN_00001.png\n")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(bad / "odd.png")
    out = tmp_path / "out"
    r = restore_cli(root / "test.csv", bad, tmp_path / "missing.png", "--checkpoint", pipe_dir, "--out", out,
                    "--zip", tmp_path / "sub.zip", "--save-intermediates", "--batch-size", "2")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "restored 3 image(s)" in r.stdout + r.stderr  # flushed before the fast exit
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 2 and any("broken.png" in e for e in errs) and any("missing.png" in e for e in errs)
    names = {p.name for p in out.iterdir()}
    assert {"TRAIN_00000.png", "TRAIN_00001.png", "odd.png", "odd_mask.png", "odd_gray.png"} <= names
    assert Image.open(out / "odd.png").size == (30, 20) and Image.open(out / "odd.png").mode == "RGB"
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        assert sorted(z.namelist()) == ["TRAIN_00000.png", "TRAIN_00001.png", "odd.png"]
        assert all(z.read(n) == (out / n).read_bytes() for n in z.namelist())  # the PNGs as written


def test_restore_reports_an_unwritable_output_and_keeps_the_others(pipe_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((24, 32), 90, np.uint8)).save(src / f"{name}.png")
    out = tmp_path / "out"
    (out / "b.png").mkdir(parents=True)  # a folder where b's result should go
    r = restore_cli(src, "--checkpoint", pipe_dir, "--out", out, "--zip", tmp_path / "s.zip")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "b.png" in errs[0] and "cannot write" in errs[0]
    assert (out / "a.png").is_file() and (out / "c.png").is_file()
    with zipfile.ZipFile(tmp_path / "s.zip") as z:
        assert sorted(z.namelist()) == ["a.png", "c.png"]


def test_restore_with_user_mask(pipe_dir, tmp_path):
    img = np.full((40, 40), 180, np.uint8)
    img[10:20, 10:20] = 30
    Image.fromarray(img).save(tmp_path / "a.png")
    m = np.zeros((40, 40), np.uint8)
    m[10:20, 10:20] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    r = restore_cli(tmp_path / "a.png", "--checkpoint", pipe_dir, "--out", tmp_path / "o", "--mask",
                    tmp_path / "m.png", "--save-intermediates")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o/a_mask.png")), m)
    g = np.asarray(Image.open(tmp_path / "o/a_gray.png"))
    assert np.array_equal(g[m == 0], img[m == 0])


def test_restore_bad_checkpoint_is_one_line(tmp_path):
    r = restore_cli(tmp_path, "--checkpoint", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nope" in r.stderr


def test_evaluate_pipeline_and_baselines(tiny_pipeline, tmp_path):
    from pipeline.data import DaconData
    data = DaconData(make_dacon(tmp_path / "d", n=2, size=64), image_size=64, val_fraction=1.0)
    m = evaluate(tiny_pipeline, data.val, out_dir=tmp_path / "ev", progress=False)
    assert m["n"] == 2 and 0 <= m["iou"] <= 1 and -1 <= m["C"] <= 1
    assert abs(m["score"] - (0.2 * m["S"] + 0.4 * m["M"] + 0.4 * m["C"])) < 1e-9
    assert (tmp_path / "ev/per_image.csv").is_file() and (tmp_path / "ev/grid.png").is_file()
    assert Image.open(tmp_path / "ev/grid.png").size == (5 * 64, 2 * 64)
    g = evaluate(None, data.val, baseline="gray", progress=False)
    t = evaluate(None, data.val, baseline="telea", progress=False)
    assert g["rule_iou"] > 0.95 and t["M"] > g["M"]


def test_demo_on_bundled_samples_writes_panels_and_scores(pipe_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.demo", "--checkpoint", str(pipe_dir), "--out",
                        str(tmp_path / "demo"), "-n", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "mean over 2: S=" in r.stdout and "score=" in r.stdout
    panels = sorted(p.name for p in (tmp_path / "demo").glob("kodim*.png"))
    assert panels == ["kodim01.png", "kodim02.png"]
    im = Image.open(tmp_path / "demo" / "kodim01.png")
    assert im.size == (5 * 384 + 4 * 4, 256)  # five panels and four separators


def test_demo_scores_a_competition_pair(pipe_dir, tmp_path):
    root = make_dacon(tmp_path / "d", n=1, size=48)
    r = subprocess.run([sys.executable, "-m", "pipeline.demo", str(root / "train_input"), "--checkpoint",
                        str(pipe_dir), "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "TRAIN_00000: S=" in r.stdout and "mean over 1" in r.stdout


def test_assemble_swaps_a_stage_and_refuses_the_wrong_slot(pipe_dir, tmp_path):
    from pipeline import Pipeline
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipeline.assemble", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("--base", pipe_dir, "--inpaint", pipe_dir / "inpaint", "--out", tmp_path / "p", "--fp16",
            "--precision", "auto")
    assert r.returncode == 0, r.stderr
    p = Pipeline.load(tmp_path / "p")
    assert p.precision == "auto"
    assert set(p.stages) == {"mask", "inpaint", "colorize"}
    assert (tmp_path / "p/inpaint/model.safetensors").stat().st_size < 0.6 * (pipe_dir / "inpaint/model.safetensors").stat().st_size
    r = run("--mask", pipe_dir / "colorize", "--out", tmp_path / "q")
    assert r.returncode == 2 and "not a MaskDetector" in r.stderr and "Traceback" not in r.stderr


def test_assemble_sets_inference_settings_and_refuses_unknown_ones(pipe_dir, tmp_path, capsys):
    from pipeline import Pipeline
    from pipeline.assemble import main
    assert main(["--base", str(pipe_dir), "--out", str(tmp_path / "p"), "--set", "colorize.saturation=0.5",
                 "--set", "inpaint.context=32", "--set", "backend=torch", "--set", "colorize.hole_saturation=0.5",
                 "--set", "colorize.prior_shift=0.03"]) == 0
    p = Pipeline.load(tmp_path / "p")
    assert p.colorize.config["saturation"] == 0.5 and p.inpaint.config["context"] == 32 and p.backend == "torch"
    assert p.colorize.config["hole_saturation"] == 0.5 and p.colorize.config["prior_shift"] == 0.03
    assert main(["--base", str(pipe_dir), "--out", str(tmp_path / "p2"),
                 "--set", "precision={inpaint: bf16, colorize: fp32}"]) == 0
    p = Pipeline.load(tmp_path / "p2", backend="torch")
    assert p.precision == {"inpaint": "bf16", "colorize": "fp32"}
    assert p.engine("colorize") == (None, "fp32") and p.engine("inpaint") == (None, "bf16")
    assert main(["--base", str(tmp_path / "p2"), "--out", str(tmp_path / "p3"), "--set", "precision.colorize=bf16"]) == 0
    assert Pipeline.load(tmp_path / "p3").precision == {"inpaint": "bf16", "colorize": "bf16"}
    for bad, msg in (("colorize.nope=1", "no setting 'nope'"), ("speed=3", "unknown pipeline option"),
                     ("colorize.head_stride=2", "colorize.head_stride is an architecture setting"),
                     ("inpaint.hole_weight=2", "inpaint.hole_weight is a training setting"),
                     ("backend=tensorrt", "backend must be"), ("context", "KEY=VALUE"), ("context=32", "unknown pipeline option"),
                     ("damage.min_votes=-1", "damage.min_votes"),
                     ("precision=fp64", "precision must be"), ("colorize.hole_saturation=-1", "hole_saturation must be"), ("precision={colour: fp32}", "unknown slot"),
                     ("precision.colour=fp32", "unknown slot"), ("precision.mask=fp64", "precision must be"),
                     ("precision={mask:", "cannot read the value")):
        assert main(["--base", str(pipe_dir), "--out", str(tmp_path / "q"), "--set", bad]) == 2
        assert msg in capsys.readouterr().err


def test_assemble_drops_an_optional_slot_and_nothing_else(pipe_dir, tmp_path, capsys):
    from pipeline import Pipeline
    from pipeline.assemble import main
    assert main(["--base", str(pipe_dir), "--scratch", str(pipe_dir / "mask"), "--scratch2", str(pipe_dir / "mask"),
                 "--out", str(tmp_path / "two")]) == 0
    assert set(Pipeline.load(tmp_path / "two").stages) == {"mask", "inpaint", "colorize", "scratch", "scratch2"}
    assert main(["--base", str(tmp_path / "two"), "--drop", "scratch2", "--out", str(tmp_path / "one")]) == 0
    one = Pipeline.load(tmp_path / "one")
    assert set(one.stages) == {"mask", "inpaint", "colorize", "scratch"}
    assert not (tmp_path / "one" / "scratch2").exists()
    gray = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    assert one.detect(gray, "scratches").shape == gray.shape  # the scratch path runs on the one left
    for argv, msg in ((["--drop", "scratch2", "--scratch2", str(pipe_dir / "mask")], "contradict"),
                      (["--drop", "mask"], "invalid choice")):
        with pytest.raises(SystemExit) as e:
            main(["--base", str(tmp_path / "two"), "--out", str(tmp_path / "bad"), *argv])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _break_two_pairs(root):
    (root / "train_gt" / "TRAIN_00001.png").unlink()                                   # a missing file
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "train_input" / "TRAIN_00002.png")  # wrong size


def test_evaluate_reports_bad_pairs_and_scores_the_rest(pipe_dir, tmp_path):
    root = make_dacon(tmp_path / "d", n=4, size=48)
    _break_two_pairs(root)
    r = subprocess.run([sys.executable, "-m", "pipeline.evaluate", f"checkpoint={pipe_dir}", "data=dacon",
                        f"data.root={root}", "progress=false", f"out_dir={tmp_path / 'ev'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert any("TRAIN_00001.png: no such file" in e for e in errs)
    assert any("TRAIN_00002.png" in e and "30x20" in e for e in errs)
    assert "on 2 images" in r.stdout and "score=" in r.stdout


def test_training_skips_bad_pairs(tmp_path):
    from tests.test_train import train
    root = make_dacon(tmp_path / "d", n=6, size=64)
    _break_two_pairs(root)  # 2 bad of 6, 3 in each split: both splits keep a good pair
    r = train("stage=mask", "data=dacon", f"data.root={root}", "data.val_fraction=0.5", "trainer.max_steps=3",
              f"out_dir={tmp_path / 'm'}")
    assert "skipping" in r.stdout + r.stderr


def test_a_killed_album_resumes_with_every_photo_done_once_and_a_manifest(pipe_dir, tmp_path):
    """kill -9 in the middle, then --skip-existing: no output is half-written, none is redone."""
    import csv
    import signal
    import time
    src = tmp_path / "album"
    src.mkdir()
    for i in range(24):
        Image.fromarray(_damaged_photo(i)).save(src / f"p{i:02d}.png")
    (src / "p99.png").write_text("not an image")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.restore", str(src), "--out", str(out), "--checkpoint", str(pipe_dir),
           "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("p*.png"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sorted(f.name for f in out.glob("p*.png"))
    r = subprocess.run([*cmd, "--skip-existing"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "p99.png" in r.stderr                     # the bad file: one line, the rest go on
    if first:
        assert f"skipped {len(first)} input(s)" in r.stderr
    outputs = sorted(out.glob("p*.png"))
    assert [f.name for f in outputs] == [f"p{i:02d}.png" for i in range(24)]
    for f in outputs:
        Image.open(f).load()                                                # none is corrupt
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert sorted(Path(row["input"]).name for row in rows) == sorted(f.name for f in src.iterdir())
    status = {Path(row["input"]).name: row["status"] for row in rows}
    assert {n for n, s in status.items() if s == "skipped"} == set(first)   # done once: not redone
    assert status["p99.png"] == "failed" and sum(s == "restored" for s in status.values()) == 24 - len(first)


def test_batches_restored_at_once_equal_one_at_a_time_and_a_failed_one_keeps_the_others(
        pipe_dir, tmp_path, monkeypatch, capsys):
    from pipeline import restore
    from pipeline.pipeline import Pipeline
    src = tmp_path / "in"
    src.mkdir()
    for i in range(7):
        size = (40, 48) if i % 3 else (24, 40)  # two sizes: batches of one size each
        Image.fromarray(_damaged_photo(i, 64)[:size[0], :size[1]]).save(src / f"p{i}.png")
    outs = {}
    threads = torch.get_num_threads()
    for jobs in (1, 3, None):  # None: the default, one batch per core plus one, each on one thread
        # (the competition preset's pale colour: the photo preset's full colour can show a 1-level
        # difference between one and two torch threads, float sums in another order)
        assert restore.main([str(src), "--checkpoint", str(pipe_dir), "--out", str(tmp_path / f"o{jobs}"),
                             "--batch-size", "2", "--no-progress", "--preset", "competition",
                             *(["--jobs", str(jobs)] if jobs else [])]) == 0
        outs[jobs] = {p.name: np.asarray(Image.open(p)) for p in sorted((tmp_path / f"o{jobs}").glob("*.png"))}
        assert torch.get_num_threads() == threads  # the album's threads are the caller's again
    assert len(outs[1]) == 7 and outs[1].keys() == outs[3].keys() == outs[None].keys()
    assert all(np.array_equal(outs[1][k], outs[j][k]) for k in outs[1] for j in (3, None))

    real = Pipeline.restore_many

    def failing(self, grays, *a, **k):
        if grays[0].shape == (24, 40):
            raise RuntimeError("boom")
        return real(self, grays, *a, **k)
    monkeypatch.setattr(Pipeline, "restore_many", failing)
    capsys.readouterr()
    assert restore.main([str(src), "--checkpoint", str(pipe_dir), "--out", str(tmp_path / "f"),
                         "--batch-size", "2", "--jobs", "3", "--no-progress"]) == 1
    errs = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errs) == 3 and all("boom" in e for e in errs)  # p0, p3, p6
    assert sorted(p.name for p in (tmp_path / "f").glob("p*.png")) == ["p1.png", "p2.png", "p4.png", "p5.png"]
    rows = (tmp_path / "f" / "manifest.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[5] for r in rows) == ["failed"] * 3 + ["restored"] * 4


def test_the_restore_command_reads_its_inputs_before_torch_loads():
    """`import pipeline.restore` loads no torch (so reading runs beside torch's import), and the
    libgomp setting that stages makes is there before torch loads through any pipeline module."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}

    def run(code):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()
    light = run("import sys, os, pipeline.restore; print('torch' in sys.modules, 'stages' in sys.modules, "
                "os.environ.get('GOMP_SPINCOUNT'))")
    assert light[:2] == ["False", "False"]
    assert light[2] == run("import os, stages; print(os.environ.get('GOMP_SPINCOUNT'))")[0] != "None"
    assert run("import sys, pipeline; pipeline.Pipeline; print('torch' in sys.modules)") == ["True"]


def test_read_ahead_keeps_order_stays_bounded_reports_bad_inputs_and_raises_a_bug(tmp_path):
    import threading
    import time

    from pipeline.io import ImageError
    from pipeline.album import ReadAhead as _ReadAhead
    held, most = [], 3
    lock = threading.Lock()
    state = {"read": 0, "taken": 0}

    def read(i):
        with lock:
            state["read"] += 1
            held.append(state["read"] - state["taken"])
        if i == 4:
            raise ImageError(f"in{i}.png: not an image file")
        return np.zeros((2, 3), np.uint8), None, None

    got = []
    for i, data, err in _ReadAhead(read, list(range(9)), most=most):
        time.sleep(0.01)  # a slow consumer: the reader must wait for room
        with lock:
            state["taken"] += 1
        got.append((i, err))
    assert [i for i, _ in got] == list(range(9))
    assert [e for _, e in got if e] == ["in4.png: not an image file"]
    assert max(held) <= most + 1  # never more than `most` waiting, plus the one being read

    ahead = _ReadAhead(lambda i: (np.zeros((1000, 1000), np.uint8), None, None), list(range(50)), pixels=2_500_000)
    time.sleep(0.3)
    assert len(ahead._ready) <= 3  # about `pixels` ahead: 2.5 MP of 1 MP images
    ahead.close()

    def buggy(i):
        raise KeyError("a bug, not a bad input")
    with pytest.raises(KeyError):
        list(_ReadAhead(buggy, [1, 2]))


def test_an_unknown_damage_kind_is_a_usage_error(pipe_dir, tmp_path):
    Image.fromarray(np.full((24, 32), 90, np.uint8)).save(tmp_path / "a.png")
    r = restore_cli(tmp_path / "a.png", "--checkpoint", pipe_dir, "--out", tmp_path / "o", "--damage", "cracks")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "invalid choice: 'cracks'" in r.stderr and "scratches" in r.stderr
