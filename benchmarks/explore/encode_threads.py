"""Session 25: how fast the H.264 writer encodes, with x264's slice threads (PyAV's default thread
type, ``SLICE``: one frame at a time, cut into slices) against its frame threads (``FRAME``: several
frames at once, what the ffmpeg command line uses). Frames: bikes.mp4 upscaled (bicubic) to
WIDTHxHEIGHT, N frames looped back and forth, the writer's own settings (crf 17, preset medium, BT.709
conversion), each frame handed over as ``VideoWriter.write`` does. Prints frames per second, the CPU
time it took, and the file's size, for each thread type, interleaved:

    python3 benchmarks/explore/encode_threads.py 3840 2160 60 SLICE FRAME SLICE FRAME
"""
import os
import resource
import sys
import time

import av
import cv2

from flickerless import video
from flickerless.demo import registry_clip

w, h, n = (int(x) for x in sys.argv[1:4])
kinds = sys.argv[4:] or ["SLICE", "FRAME"]
src = [cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in video.iter_frames(registry_clip("bikes.mp4"), stop=30)]
frames = [src[k if k < len(src) else 2 * len(src) - 2 - k] for k in (i % (2 * len(src) - 2) for i in range(n))]
for kind in kinds:
    out = f"/tmp/enc_{kind}.mp4"
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    with av.open(out, "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = video._codec_options("h264", 17)
        s.codec_context.thread_type = kind
        s.codec_context.colorspace = 1
        s.codec_context.color_range = 1
        for f in frames:
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p", dst_colorspace=1,
                                                                        dst_color_range="MPEG")
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    dt = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(f"{w}x{h} x{n} {kind:5s}: {n / dt:6.1f} frames/s ({dt:.1f} s, CPU {cpu:.0f} s), "
          f"{os.path.getsize(out) / 2**20:.1f} MiB, {os.cpu_count()} cores", flush=True)
