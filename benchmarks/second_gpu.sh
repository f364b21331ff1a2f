#!/usr/bin/env bash
# Any GPU index can be chosen: the Triton kernels (PatchMatch, GroupNorm) on the last GPU against the
# torch passes, then the deflicker CLI and the engine demo on cuda:1. Run on a machine with two GPUs,
# the wheels installed in /tmp/site (see BENCHMARKS.md, session 14).
set -u
export PYTHONPATH=/tmp/site:src:.
python3 -m pytest -q tests/test_kernels.py::test_triton_kernels_on_a_second_gpu \
  tests/test_layout.py::test_triton_groupnorm_on_a_second_gpu 2>&1 | tail -1
python3 - <<'PY'
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import write
clip, _ = load_clip(registry_clip("bikes.mp4"), 24, 640)
_, flick = flickering_pair(clip)
write("/tmp/g.mp4", clip, 25)
write("/tmp/s.mp4", flick, 25)
PY
python3 -m flickerless.cli deflicker --guide /tmp/g.mp4 --style /tmp/s.mp4 -o /tmp/o1.mp4 --device cuda:1 -q; echo "cli on cuda:1: exit $?"
timeout 300 python3 -m flickerless.cli demo --engine --device cuda:1 --frames 8 --out /tmp/eng -q 2>&1 | tail -3; echo "engine demo on cuda:1: exit $?"
