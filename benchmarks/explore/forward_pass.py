"""Session 25: where a file-to-file run's time goes, pass by pass. Runs ``flickerless deflicker`` in this
process (the arguments after VARIANT), with each pass of the remapping table timed (the GPU synchronised
at its start and end): the backward passes ("B"), the forward passes ("F", which also restore detail and
hand frames to the writer), the time before the first pass (imports done: reading, cuts, warm-up) and
after the last (the encoder's last frames, moving the output into place). VARIANT:

- ``full``: the command as it is;
- ``no-encode``: the writer takes each frame (waits for its copy from the GPU, makes it contiguous) but
  encodes nothing: what the encoder's CPU time costs the blend;
- ``api-gpu`` / ``api-host``: ``deflicker()`` on the two clips (the arguments: GUIDE STYLE) read whole
  first (the first N of them, a third argument), as uint8 tensors on the GPU / arrays in RAM, one shot,
  after a warm-up on 6 frames;

    python3 benchmarks/explore/forward_pass.py api-gpu G.mp4 S.mp4
    python3 benchmarks/explore/forward_pass.py full deflicker --guide G.mp4 --style S.mp4 -o O.mp4 --device cuda -q --no-cuts
"""
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from flickerless import cli, video
import flickerless.blend.deflicker  # noqa: F401  (the module; the package exports the function)

dfl = sys.modules["flickerless.blend.deflicker"]

variant, argv = sys.argv[1], sys.argv[2:]
spent: dict = defaultdict(float)
marks: dict = {}
original = dfl._table_pass


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(style, remapper, store, window, order, tag, *a, **k):
    sync()
    t = time.perf_counter()
    marks.setdefault("first", t)
    try:
        return original(style, remapper, store, window, order, tag, *a, **k)
    finally:
        sync()
        marks["last"] = time.perf_counter()
        spent[tag] += marks["last"] - t


dfl._table_pass = timed
if variant == "no-encode":
    def write(self, frame):
        np.ascontiguousarray(frame, dtype=np.uint8)
        self.count += 1

    video.VideoWriter.write = write
    video.VideoWriter.close = video.VideoWriter.abort
if variant.startswith("api-"):  # deflicker() on frames read first: argv is GUIDE STYLE
    g, s = (video.read(p, int(argv[2]) if len(argv) > 2 else None)[0] for p in argv[:2])
    if variant == "api-gpu":
        g, s = (torch.from_numpy(x).to("cuda").permute(0, 3, 1, 2) for x in (g, s))
    from flickerless import deflicker
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    deflicker(g[:6], s[:6], device=dev, cuts=False)  # warm
    spent.clear()
    marks.clear()
    sync()
    start = time.perf_counter()
    deflicker(g, s, device=dev, cuts=False)
    sync()
    rc, end = 0, time.perf_counter()
else:
    start = time.perf_counter()
    rc = cli.main(argv)
    end = time.perf_counter()
print(f"{variant}: exit {rc}, {end - start:.1f} s in all: before the first pass {marks['first'] - start:.1f} s, "
      f"backward passes {spent['B']:.1f} s, forward passes {spent['F']:.1f} s, after the last {end - marks['last']:.1f} s",
      flush=True)
