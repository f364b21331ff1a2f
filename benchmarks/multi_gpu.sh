#!/usr/bin/env bash
# --device cuda:0,cuda:1 against cuda:0 alone: the same frames (window and table modes, PNG output, exactly), then
# the CLI on 1080p (decoding, deflicker at default settings, encoding) on one and on two GPUs, twice,
# interleaved. Run on a machine with two GPUs, the wheels installed in /tmp/site (BENCHMARKS.md).
set -u
export PYTHONPATH=/tmp/site:src:. PYTHONUNBUFFERED=1
python3 - <<'PY'
import subprocess, sys
import numpy as np
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
from flickerless.video import read, write
clip, _ = load_clip(registry_clip("bikes.mp4"), 60, 640)
_, flick = flickering_pair(clip)
write("/tmp/g.mp4", clip, 25)
write("/tmp/s.mp4", flick, 25)
for mode in ("window", "table"):
    outs = []
    for dev in ("cuda:0", "cuda:0,cuda:1"):
        o = f"/tmp/o_{mode}_" + dev.replace(",", "_").replace(":", "")
        subprocess.run([sys.executable, "-m", "flickerless.cli", "deflicker", "--guide", "/tmp/g.mp4", "--style",
                        "/tmp/s.mp4", "-o", o, "--mode", mode, "--device", dev, "-q"], check=True)
        outs.append(read(o)[0])
    print(f"{mode} mode, one GPU vs two: identical frames:", np.array_equal(outs[0], outs[1]))
PY
N=${N:-160}
[ "$N" -gt 0 ] || exit 0
for i in 1 2; do
  for dev in cuda:0 cuda:0,cuda:1; do
    echo "== $dev"
    python3 benchmarks/memory.py --frames "$N" --device "$dev" --tmp /tmp 2>&1 | grep -E "exit|RSS"
  done
done
