"""Long high-resolution clips for benchmarks/memory.py, made fast: bikes.mp4 looped back and forth,
upscaled with cv2 (bicubic), and a flickering copy (a per-frame gain, as memory.py's), encoded with
x264 ``ultrafast`` at crf 18. 1000 frames of 4K take 36-45 s on an H100 machine's 16 cores, against
the ~10 min memory.py's own Lanczos + ``medium`` clips would take (longer than one device call).

    python benchmarks/fast_clips.py 1000 /tmp/c4 3840 2160
    python benchmarks/memory.py --frames 1000 --width 3840 --height 2160 --device cuda --fast --clips /tmp/c4 --no-cuts
"""

from __future__ import annotations

import os
import sys
import time

import av
import cv2

from flickerless.demo import registry_clip
from flickerless.video import iter_frames


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 1000
    out = argv[1] if len(argv) > 1 else "/tmp/c4"
    w, h = (int(argv[2]), int(argv[3])) if len(argv) > 3 else (3840, 2160)
    src = [cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in iter_frames(registry_clip("bikes.mp4"))]
    os.makedirs(out, exist_ok=True)
    t = time.time()
    outs = []
    for name in ("guide", "style"):
        c = av.open(os.path.join(out, f"{name}.mp4"), "w")
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        s.thread_type = "AUTO"
        outs.append((c, s))
    for i in range(n):
        k = i % (2 * len(src) - 2)
        f = src[k if k < len(src) else 2 * len(src) - 2 - k]
        gain = 0.85 + 0.3 * ((i * 7919) % 97) / 97
        for (c, s), img in zip(outs, (f, cv2.convertScaleAbs(f, alpha=gain))):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")):
                c.mux(p)
    for c, s in outs:
        for p in s.encode():
            c.mux(p)
        c.close()
    print(f"made {n} frames of {w}x{h} in {out} in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
