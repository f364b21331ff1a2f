"""Session 17: peak RSS of `flickerless deflicker --keyframes` with 60 keyframes of 1920x1080 (every other
frame of bikes.mp4 upscaled), computing a 1-frame range so that the run is short on a CPU. Made once in
the current folder (g1080.mp4, k1080/). Compare two trees:

    cd /tmp/somewhere && for t in /work/main/build/prev/src /work/main/src; do python kmem.py $t; done
"""
import os, resource, subprocess, sys, numpy as np
from PIL import Image
tree = sys.argv[1]
if not os.path.exists("k1080/0.png"):
    sys.path.insert(0, tree)
    from flickerless import video
    from flickerless.demo import registry_clip
    frames = [video.resize_frame(f, (1080, 1920)) for f in video.iter_frames(registry_clip("bikes.mp4"), stop=120)]
    video.write("g1080.mp4", np.stack(frames), 25)
    os.makedirs("k1080", exist_ok=True)
    for i in range(0, 120, 2):
        Image.fromarray(frames[i][:, :, ::-1].copy()).save(f"k1080/{i}.png", compress_level=1)
env = dict(os.environ, PYTHONPATH=tree)
r = subprocess.run([sys.executable, "-m", "flickerless.cli", "deflicker", "--guide", "g1080.mp4", "--keyframes", "k1080",
                    "-o", "ko", "--frames", "1:2", "-q", "--quality", "draft", "--device", "cpu"], env=env, capture_output=True, text=True)
print(tree, "exit", r.returncode, r.stderr[-200:], "peak RSS %.2f GiB" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20))
