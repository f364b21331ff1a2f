"""Session 21: the cut pass of a streamed run (every guide frame decoded and reduced to a 32x18 thumbnail
before any other work), one frame at a time against thumbnails_of (threads), on 120 frames of bikes.mp4
upscaled to 1920x1080 (made once in /tmp/hd.mp4); the thumbnails must be equal.

    PYTHONPATH=src python benchmarks/explore/cut_pass.py
"""
import os
import time

import torch

from flickerless import video
from flickerless.blend.deflicker import frame_thumbnail, thumbnails_of
from flickerless.demo import registry_clip

path = "/tmp/hd.mp4"
if not os.path.exists(path):
    src = video.read(registry_clip("bikes.mp4"), 120)[0]
    video.write(path, (video.resize_frame(f, (1080, 1920)) for f in src), 25)
for rep in range(2):
    t0 = time.perf_counter()
    a = torch.stack([frame_thumbnail(f) for f in video.iter_frames(path)])
    t1 = time.perf_counter()
    b = thumbnails_of(video.iter_frames(path))
    t2 = time.perf_counter()
    n = sum(1 for _ in video.iter_frames(path))
    t3 = time.perf_counter()
    print(f"one at a time {t1 - t0:.2f} s, threaded {t2 - t1:.2f} s, decoding alone {t3 - t2:.2f} s ({n} frames); "
          f"equal: {torch.equal(a, b)}", flush=True)
