"""Session 16: reading a guide and a style one after the other or at once (the command line's
``_open_both``), time and peak RSS of the reading alone. Args: the src tree, serial|both, two clips
(default bigbuckbunny.mp4 twice). Run each case in its own process (peak RSS is per process):

    for m in serial both; do .venv/bin/python benchmarks/explore/read_at_once.py src $m; done
    .venv/bin/python benchmarks/explore/read_at_once.py src both /tmp/g1080.mp4 /tmp/s1080.mp4
"""
import resource
import sys
import time

sys.path.insert(0, sys.argv[1])
from flickerless.demo import registry_clip  # noqa: E402
from flickerless.video import open_frames  # noqa: E402

a, b = sys.argv[3:5] if len(sys.argv) > 4 else [registry_clip("bigbuckbunny.mp4")] * 2
t0 = time.perf_counter()
if sys.argv[2] == "serial":
    g, s = open_frames(a)[0], open_frames(b)[0]
else:
    from flickerless.cli import _open_both

    g, s = _open_both(lambda: open_frames(a)[0], lambda cancel: open_frames(b, cancel=cancel)[0])
print(sys.argv[1:3], f"{time.perf_counter() - t0:.2f} s", f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
