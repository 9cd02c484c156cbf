#!/usr/bin/env bash
# Every CUDA check in one command, on a GPU machine (the device tool's, or your own):
#   bash tools/gpu_check.sh [SHARED_DATA_DIR]      (default ../shared/data; a copy such as shared_small/ on a lent machine)
# Installs the wheels in .whl/ first when there are any (a machine without the project's
# dependencies; tools/gpu_wheels.sh makes them), then: the `gpu` tests (AMP bf16/fp16 training of
# every stage, DDP over NCCL on one and on two GPUs, a CUDA restore against the CPU one),
# tools/gpu_check.py (training samples/s per stage and precision, CUDA restore ms/image) and
# the dev benchmark on CUDA when the dev photos are there. Exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:src
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
python3 tools/gpu_check.py --steps 20
if [ -d "$data" ]; then
  python3 benchmarks/dev_benchmark.py --device cuda --precision saved --variants pipeline --shared "$data"
fi
