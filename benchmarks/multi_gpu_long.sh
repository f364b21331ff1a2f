#!/usr/bin/env bash
# One GPU against two on a long 1080p take, streamed, default settings: the CLI file to file, then the
# two outputs compared. Run on a machine with two GPUs, from the repository root, with the wheels in .whl
# (BENCHMARKS.md, "Two GPUs on a long take"). N frames (default 600).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:src:benchmarks PYTHONUNBUFFERED=1 TMPDIR=/tmp/spill
mkdir -p /tmp/spill /tmp/c
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
N=${N:-600}
python3 benchmarks/memory.py --frames $N --quick-clips --clips /tmp/c --device cuda:0 --no-cuts --out /tmp/o1.mp4 2>&1 | grep -E "made|exit"
for dev in cuda:0,cuda:1 cuda:0 cuda:0,cuda:1; do
  echo "== $dev"
  python3 benchmarks/memory.py --frames $N --clips /tmp/c --device $dev --no-cuts --out /tmp/o_${dev//[:,]/_}.mp4 2>&1 | grep -E "exit"
done
python3 - <<'PY'
import numpy as np
from flickerless.video import iter_frames
a = iter_frames("/tmp/o_cuda_0.mp4"); b = iter_frames("/tmp/o_cuda_0_cuda_1.mp4")
se, n, d = 0.0, 0, 0
for x, y in zip(a, b):
    se += float(((x.astype(np.float64) - y) ** 2).mean()); n += 1; d += int(not np.array_equal(x, y))
print(f"one GPU vs two: {n} frames, {d} differ, PSNR between them {10 * np.log10(255 ** 2 / max(se / n, 1e-12)):.2f} dB")
PY
