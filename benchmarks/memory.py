"""Host memory of a long high-resolution clip in table mode (issue: 1000 frames of 1080p in 8 GiB);
``--mode window|keyframes`` for the other modes (keyframes: every ``--keyframe-every`` frame of the
flickering clip).

Builds a 1920x1080 clip of N frames on disk (bikes.mp4 upscaled and looped, plus a flickering
stylised version), then runs ``flickerless deflicker`` on the two files as a user would, in a
child process whose peak RSS is read from the kernel (ru_maxrss of children). Memory does not
depend on PatchMatch effort, so ``--fast`` (1 iteration, patch 5, 3 levels) keeps the run short;
the figure is labelled with the settings used.

    python benchmarks/memory.py --frames 1000 --device cuda --fast
    python benchmarks/memory.py --frames 120 --device cuda --profile prof.out   # where the time goes
    python benchmarks/memory.py --frames 120 --device cuda --in-memory   # against deflicker() on the same frames
    python benchmarks/memory.py --frames 1000 --device cuda --fast --clips /tmp/c   # again: the same clips
    python benchmarks/memory.py --frames 1000 --device cuda --fast --clips /tmp/c --stream on   # decoded as it goes
    python benchmarks/memory.py --frames 1000 --width 3840 --height 2160 --device cuda --fast --quick-clips --no-cuts

--profile PATH runs the command under cProfile (main thread only) and prints its 25 costliest calls.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from flickerless.demo import registry_clip
from flickerless.video import VideoWriter, iter_frames, resize_frame


def _looped(a, src):
    """``a.frames`` frames of bikes.mp4 looped back and forth, each with the gain of its flickering copy
    (host memory does not depend on content: a cheap per-frame colour jump stands in for style)."""
    for i in range(a.frames):
        k = i % (2 * len(src) - 2)
        yield src[k if k < len(src) else 2 * len(src) - 2 - k], 0.85 + 0.3 * ((i * 7919) % 97) / 97


def _make_clips(a, src, gpath, spath):
    """bikes.mp4 upscaled and looped back and forth to ``a.frames`` frames, and a flickering version."""
    if a.quick_clips:
        return _make_clips_quick(a, src, gpath, spath)
    with VideoWriter(gpath, 25) as gw, VideoWriter(spath, 25) as sw:
        for f, gain in _looped(a, src):
            f = resize_frame(f, (a.height, a.width))
            gw.write(f)
            sw.write(np.clip(f * gain, 0, 255).astype(np.uint8))


def _make_clips_quick(a, src, gpath, spath):
    """The same clips made fast, for 4K: the source upscaled once (bicubic), x264 ``ultrafast`` at crf 18
    (1000 frames of 4K in 36-45 s on an H100 machine's 16 cores, against ~10 min with Lanczos and
    ``medium``: longer than one device call)."""
    import av
    import cv2

    src = [cv2.resize(f, (a.width, a.height), interpolation=cv2.INTER_CUBIC) for f in src]
    outs = []
    for path in (gpath, spath):
        c = av.open(path, "w")
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = a.width, a.height, "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        s.thread_type = "AUTO"
        outs.append((c, s))
    for f, gain in _looped(a, src):
        for (c, s), img in zip(outs, (f, cv2.convertScaleAbs(f, alpha=gain))):
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")):
                c.mux(packet)
    for c, s in outs:
        for packet in s.encode():
            c.mux(packet)
        c.close()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--device", default=None)
    p.add_argument("--window", default="15")
    p.add_argument("--mode", default="table", choices=["table", "window", "keyframes"])
    p.add_argument("--keyframe-every", type=int, default=10,
                   help="keyframes mode: every K-th frame of the flickering clip is a keyframe (saved as PNG)")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--tmp", default=None)
    p.add_argument("--clips", default=None,
                   help="folder for the two clips: made there if missing, else used as they are (to run two trees "
                        "on the same clips)")
    p.add_argument("--quick-clips", action="store_true",
                   help="make the clips fast (bicubic upscale, x264 ultrafast): for 4K, whose clips take ~10 min otherwise")
    p.add_argument("--no-cuts", action="store_true",
                   help="one shot (the clip is bikes.mp4 looped, with its cuts): a long take's table keeps the most")
    p.add_argument("--stream", choices=["auto", "on", "off"], default="auto",
                   help="decode the clips as the work goes (on), read them whole first (off), or let the tool choose")
    p.add_argument("--batch", type=int, default=None, help="frame pairs per GPU batch (default: the tool's)")
    p.add_argument("--out", default=None, help="keep the output here (default: out.mp4 beside the clips)")
    p.add_argument("--profile", default=None, help="write a cProfile of the command here and print its top")
    p.add_argument("--in-memory", action="store_true",
                   help="also time flickerless.deflicker() on the same clips decoded onto the device beforehand "
                        "(what the command line adds: decoding, transfers, spill, encoding)")
    a = p.parse_args(argv)
    src = list(iter_frames(registry_clip("bikes.mp4")))
    tmp = a.clips or tempfile.mkdtemp(dir=a.tmp)
    os.makedirs(tmp, exist_ok=True)
    gpath, spath, opath = (os.path.join(tmp, n) for n in ("guide.mp4", "style.mp4", "out.mp4"))
    opath = a.out or opath
    t0 = time.time()
    if a.clips and os.path.exists(gpath) and os.path.exists(spath):
        print(f"using the clips in {tmp}")
    else:
        # in a process of its own: the upscaled frames would otherwise stay in this process's heap, and a
        # command started from it counts its parent's resident pages in its peak RSS (fork)
        import multiprocessing

        maker = multiprocessing.get_context("spawn").Process(target=_make_clips, args=(a, src, gpath, spath))
        maker.start()
        maker.join()
        if maker.exitcode:
            sys.exit(f"making the clips failed (exit {maker.exitcode})")
        print(f"made {a.frames} frames {a.width}x{a.height} in {time.time() - t0:.0f} s", flush=True)
    prof = ["-m", "cProfile", "-o", a.profile] if a.profile else []
    cmd = [sys.executable, *prof, "-m", "flickerless.cli", "deflicker", "--guide", gpath, "-o", opath,
           "--mode", a.mode, "--window", a.window, "-q"]
    if a.mode == "keyframes":
        kdir = os.path.join(tmp, f"keys{a.keyframe_every}")
        if not os.path.isdir(kdir):
            from PIL import Image

            os.makedirs(kdir)
            for i, f in enumerate(iter_frames(spath)):
                if i % a.keyframe_every == 0:
                    Image.fromarray(f).save(os.path.join(kdir, f"{i}.png"))
        cmd += ["--keyframes", kdir]
    else:
        cmd += ["--style", spath]
    if a.device:
        cmd += ["--device", a.device]
    if a.fast:
        cmd += ["--iterations", "1", "--patch-sizes", "5"]
    if a.no_cuts:
        cmd += ["--no-cuts"]
    if a.batch:
        cmd += ["--batch", str(a.batch)]
    if a.stream != "auto":
        cmd += ["--stream" if a.stream == "on" else "--no-stream"]
    t0 = time.time()
    code, peak, parts = _run_sampled(cmd)
    dt = time.time() - t0
    print(f"exit {code}; {dt:.0f} s ({dt / a.frames:.3f} s/frame); peak RSS of the deflicker process: {peak:.2f} GiB")
    if parts:
        print("peaks sampled every 0.2 s (GiB): " + ", ".join(f"{k} {v / 2**20:.2f}" for k, v in parts.items()) +
              " (RssAnon: the process's own memory; RssFile: pages of files it maps, the spilled frames among them, "
              "which the kernel can drop; RssShmem: shared memory)")
    print("command:", " ".join(cmd))
    if a.in_memory:
        import torch

        from flickerless import deflicker
        from flickerless.blend.deflicker import resolve_device

        dev = resolve_device(a.device)
        load = lambda path: torch.from_numpy(np.stack(list(iter_frames(path)))).to(dev).permute(0, 3, 1, 2)  # noqa: E731
        g, st = load(gpath), load(spath)
        opts = {"iterations": 1, "patch_sizes": [5]} if a.fast else {}
        deflicker(g[:8], st[:8], mode="table", window=None if a.window == "inf" else int(a.window), device=dev, **opts)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.time()
        deflicker(g, st, mode="table", window=None if a.window == "inf" else int(a.window), device=dev, **opts)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.time() - t0
        print(f"deflicker() on the same frames already on {dev} (uint8 tensors): {dt:.1f} s ({dt / a.frames:.3f} s/frame)")
    if a.profile:
        import pstats

        pstats.Stats(a.profile).sort_stats("cumulative").print_stats(25)
        pstats.Stats(a.profile).sort_stats("tottime").print_stats(15)
    return code


def _run_sampled(cmd):
    """Run ``cmd``: (exit code, its own peak RSS in GiB, the peaks of the parts of its resident memory
    sampled from /proc every 0.2 s, in kB; Linux). The peak RSS alone mixes the process's own memory
    with pages of the files it maps. Reaped with wait4, so the peak is this command's, not the largest
    of every child this process has had."""
    p = subprocess.Popen(cmd)
    peaks: dict[str, int] = {}
    status = f"/proc/{p.pid}/status"
    while True:
        pid, wstatus, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(wstatus)
            return p.returncode, usage.ru_maxrss / 2**20, peaks
        try:
            with open(status) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                        peaks[key] = max(peaks.get(key, 0), int(value.split()[0]))  # kB
        except OSError:  # not Linux, or the process just ended
            pass
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
