"""Review, session 14: the time to read the last 32 of 132 frames of bigbuckbunny.mp4 (open_frames
(start=100)), for the before/after of iter_frames skipping frames unconverted. Arg: the src tree.

    .venv/bin/python benchmarks/explore/range_read.py src
"""
import sys, time
sys.path.insert(0, sys.argv[1])
from flickerless import video
from flickerless.demo import registry_clip
src = registry_clip("bigbuckbunny.mp4")  # 1280x720, 132 frames
best = 1e9
for _ in range(3):
    t0 = time.perf_counter(); f, info = video.open_frames(src, start=100); best = min(best, time.perf_counter() - t0)
print(sys.argv[1], "open_frames(start=100) of 132 frames 1280x720:", round(best, 3), "s", info.frames)
