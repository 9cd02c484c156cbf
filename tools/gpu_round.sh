#!/usr/bin/env bash
# One lent-GPU call that trains several experiments side by side and brings their stages back:
#   bash tools/gpu_round.sh EXPERIMENT...          (on the device: OUT is its output folder)
# Each experiment should set trainer.max_minutes so it anneals and saves inside the call; LIMIT
# (seconds, default 480) stops a run that does not (SIGTERM: it saves). Installs .whl/ first when
# there (tools/gpu_wheels.sh). Then packs, per experiment, $OUT/EXPERIMENT.tar: the final stage
# (fp16 when it is over 12 MiB in fp32), metrics.csv, train_config.yaml, the last sample grid and
# the log. OVERRIDES (space-separated) go to every run, e.g. OVERRIDES="trainer.max_minutes=3";
# and, if GPU_TESTS is set, runs the `gpu` tests for at most that many seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:src
fi
export PYTHONPATH=${PYTHONPATH:-src} PYTHONUNBUFFERED=1
{ date -u; nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, pipeline.train, stages; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
} > "$out/env.txt" 2>&1
mkdir -p /tmp/round
for e in "$@"; do
  timeout -s TERM "${LIMIT:-480}" python3 -m pipeline.train "experiment=$e" ${OVERRIDES:-} > "/tmp/round/$e.log" 2>&1 &
done
wait
date -u >> "$out/env.txt"
for e in "$@"; do
  python3 - "$e" "$out" <<'PY' >> "$out/env.txt" 2>&1
import shutil, sys, tarfile
from pathlib import Path
import torch
from hydra import compose, initialize_config_dir
from pipeline.train import CONF_DIR
from stages import Stage
exp, out = sys.argv[1], Path(sys.argv[2])
with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    run = Path(compose("train", overrides=[f"experiment={exp}"]).out_dir)
pack = Path("/tmp/round") / exp
pack.mkdir(parents=True, exist_ok=True)
try:
    big = (run / "model.safetensors").stat().st_size > 12 * 2**20
    Stage.load(run).save(pack / "stage", dtype=torch.float16 if big else None)
except Exception as e:  # no final stage: keep what there is
    print(exp, "no stage:", e)
for name in ("metrics.csv", "train_config.yaml"):
    if (run / name).exists():
        shutil.copy(run / name, pack / name)
grids = sorted((run / "samples").glob("*.png"))
if grids:
    shutil.copy(grids[-1], pack / grids[-1].name)
shutil.copy(Path("/tmp/round") / f"{exp}.log", pack / "train.log")
with tarfile.open(out / f"{exp}.tar", "w") as t:
    t.add(pack, arcname=exp)
print(exp, "packed", sum(f.stat().st_size for f in pack.rglob("*") if f.is_file()) // 1024, "KiB")
PY
done
if [ -n "${GPU_TESTS:-}" ]; then
  timeout "$GPU_TESTS" python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -x > "$out/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?" >> "$out/env.txt"
fi
cat "$out/env.txt"
