"""Session 17: reading and writing speed of flickerless.video, to compare two trees (the colour-matrix
change). Args: the src tree, then a clip (default: bikes.mp4 upscaled to 1920x1080, 60 frames, made
once in /tmp/io1080.mp4). Reads the whole clip and writes its first 30 frames, best of 3:

    for t in build/prev/src src build/prev/src src; do .venv/bin/python benchmarks/explore/video_io_speed.py $t; done
"""
import os
import sys
import time

sys.path.insert(0, sys.argv[1])
from flickerless import video  # noqa: E402
from flickerless.demo import registry_clip  # noqa: E402

clip = sys.argv[2] if len(sys.argv) > 2 else "/tmp/io1080.mp4"
if not os.path.exists(clip):
    frames = [video.resize_frame(f, (1080, 1920)) for f in video.iter_frames(registry_clip("bikes.mp4"), stop=60)]
    video.write(clip, frames, 25)
frames, _ = video.read(clip)
read, write = [], []
for _ in range(3):
    t = time.perf_counter()
    n = sum(1 for _ in video.iter_frames(clip))
    read.append(time.perf_counter() - t)
    t = time.perf_counter()
    video.write("/tmp/io_out.mp4", frames[:30], 25)
    write.append(time.perf_counter() - t)
print(f"{sys.argv[1]}: read {n} frames {min(read):.3f} s, write 30 {min(write):.3f} s (best of 3)")
