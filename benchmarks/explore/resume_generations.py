"""What --resume costs a lossy video (session 38): carphone 176x144, 24 frames, a deflicker run writing
H.264 (--crf 17) stopped 4 times (at every 5th computed frame: 4 frames kept each time), then resumed to
the end. PSNR of each stretch of the output against the same run written losslessly (a PNG folder), next
to an uninterrupted run's mp4. DIR: an empty folder for the clips and outputs.

    PYTHONPATH=src python benchmarks/explore/resume_generations.py DIR"""
import sys

import numpy as np

from flickerless import video
from flickerless.cli import main
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair
d = sys.argv[1]
clip = load_clip(registry_clip("carphone_pristine.mp4"), 24)[0]
truth, flick = flickering_pair(clip)
video.write(d + "/g", clip); video.write(d + "/s", flick)
base = ["deflicker", "--guide", d + "/g", "--style", d + "/s", "--device", "cpu", "--mode", "window", "--window", "2",
        "--patch-sizes", "7,5", "--iterations", "2", "-q"]
assert main(base + ["-o", d + "/ref"]) == 0  # lossless reference frames
assert main(base + ["-o", d + "/whole.mp4"]) == 0
real = video.host_frame
def stopper(k):
    c = [0]
    def hf(img):
        c[0] += 1
        if c[0] == k:
            raise KeyboardInterrupt
        return real(img)
    return hf
for i in range(4):
    video.host_frame = stopper(5)
    assert main(base + ["-o", d + "/o.mp4"] + (["--resume"] if i else [])) == 130
video.host_frame = real
assert main(base + ["-o", d + "/o.mp4", "--resume"]) == 0
ref = video.read(d + "/ref")[0].astype(float); whole = video.read(d + "/whole.mp4")[0].astype(float)
out = video.read(d + "/o.mp4")[0].astype(float)
p = lambda a, b: 10 * np.log10(255**2 / ((a - b) ** 2).mean())
for a, b in ((0, 4), (4, 8), (8, 12), (12, 16), (16, 24)):
    print(f"frames {a}-{b-1}: resumed {p(out[a:b], ref[a:b]):.2f} dB, uninterrupted {p(whole[a:b], ref[a:b]):.2f} dB")
