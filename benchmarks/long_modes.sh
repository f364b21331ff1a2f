#!/usr/bin/env bash
# Long and large clips on one GPU, file to file (benchmarks/memory.py): 4K at the default settings, then
# window and keyframes modes on 1000 frames of 1080p at --fast effort, each streamed (the default). Run
# from the repository root on a GPU machine, with the wheels in .whl (BENCHMARKS.md, session 20).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:src:benchmarks PYTHONUNBUFFERED=1 TMPDIR=/tmp/spill
mkdir -p /tmp/spill
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__)"
K=${K:-120}
echo "== 4K, $K frames, table, window 15, --quality full"
python3 benchmarks/memory.py --frames "$K" --width 3840 --height 2160 --quick-clips --clips /tmp/c4 --device cuda \
    --no-cuts --out /tmp/o4k.mp4 2>&1 | grep -E "made|exit"
N=${N:-1000}
echo "== 1080p, $N frames, window mode, window 4, --fast"
python3 benchmarks/memory.py --frames "$N" --quick-clips --clips /tmp/c --device cuda --fast --mode window --window 4 \
    --out /tmp/ow.mp4 2>&1 | grep -E "made|exit"
echo "== 1080p, $N frames, keyframes mode (every 10th frame), --fast"
python3 benchmarks/memory.py --frames "$N" --clips /tmp/c --device cuda --fast --mode keyframes \
    --out /tmp/ok.mp4 2>&1 | grep -E "made|exit"
