"""Deflicker benchmark: quality, speed and memory of each mode on real clips.

Ground truth: a consistent stylisation of a real clip (flickerless.synthetic.stylize); input: the
same with per-frame flicker (colour jumps + blotches, new every frame). Reports, per clip and mode:
PSNR against the ground truth (in -> out), temporal error (in -> out, 0-255 scale), s/frame of the
deflicker call alone (file I/O and decoding excluded; frames already on the device), peak GPU
memory and peak host RSS of the case.

Peak RSS is the case's own: the highest resident memory of the process while that case ran (Linux:
the high-water mark is reset before each case through /proc/self/clear_refs and read from VmHWM). It
includes what the process already held (Python, torch, the loaded clips), so compare rows with each
other, not with zero. Elsewhere it is left out (None): getrusage's peak is the whole run's, so every
row after the first would carry the earlier cases' peaks.

    python benchmarks/deflicker.py                          # CPU, short clips
    python benchmarks/deflicker.py --device cuda --frames 120 --width 640
    python benchmarks/deflicker.py --speed --device cuda     # the 640x480 table-mode speed figure
    python benchmarks/deflicker.py --modes table,window,keyframes,all_pairs --frames 24   # every mode

--save OUT.npz keeps every case's output frames (uint8), to check that a change to speed alone left the
result as it was: `python benchmarks/same_frames.py BEFORE.npz AFTER.npz`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_grain, flickering_pair, psnr, temporal_error


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak_rss() -> bool:
    """Start the process's resident-memory high-water mark (VmHWM) again from its current size. False
    where that cannot be done (not Linux, or /proc not writable)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_GiB() -> float | None:
    """VmHWM, the highest resident memory since the last :func:`reset_peak_rss`, in GiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return None


def run_case(clip, truth, flick, mode, window, dev, batch, opts, keyframe_every=10):
    """keyframes mode: the flickering style's frames 0, K, 2K, ... are the keyframes (a user picking
    some stylised frames); every other frame is rendered from them."""
    own_peak = reset_peak_rss()  # this case's peak, not an earlier (larger) case's
    g = torch.from_numpy(clip).permute(0, 3, 1, 2).to(dev).float().div_(255)
    s = torch.from_numpy(flick).permute(0, 3, 1, 2).to(dev).float().div_(255)
    if mode == "keyframes":
        opts = {**opts, "keyframes": {i: s[i] for i in range(0, len(s), keyframe_every)}}
        s = None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0 = time.perf_counter()
    out = deflicker(g, s, mode=mode, window=window, device=dev, batch=batch, **opts)
    if mode == "keyframes":
        window = f"keyframes every {keyframe_every}"
    _sync(dev)
    dt = time.perf_counter() - t0
    res = out.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).byte().cpu().numpy()
    rss = peak_rss_GiB() if own_peak else None
    return res, {
        "mode": mode,
        "window": "inf" if window is None else window,
        "psnr_in": round(psnr(flick, truth), 2),
        "psnr_out": round(psnr(res, truth), 2),
        "temporal_in": round(temporal_error(flick, truth), 1),
        "temporal_out": round(temporal_error(res, truth), 2),
        "s_per_frame": round(dt / len(clip), 4),
        "peak_gpu_GiB": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        "peak_rss_GiB": None if rss is None else round(rss, 2),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--clips", default=None, help="default bikes.mp4,carphone_pristine.mp4")
    p.add_argument("--frames", type=int, default=None, help="frames of each clip (default 48; 64 with --speed)")
    p.add_argument("--width", type=int, default=None, help="resize clips to this width (default: native)")
    p.add_argument("--height", type=int, default=None, help="with --width: exact size (else keep aspect)")
    p.add_argument("--modes", default=None, help="default table,window")
    p.add_argument("--window", default=None, help="default 15")
    p.add_argument("--keyframe-every", type=int, default=10, help="keyframes mode: every K-th flickering frame is a keyframe")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--speed", action="store_true",
                   help="the GPU speed case: bikes at 640x480, table, window 15, 64 frames (or --frames); "
                        "--clips, --modes, --window, --width and --height are refused with it")
    p.add_argument("--warmup", action="store_true", help="run each case once before timing (GPU kernels, caches)")
    p.add_argument("--opts", default="{}", help="PatchMatch options as JSON, e.g. '{\"samples\": 5}'")
    p.add_argument("--strength", type=float, default=1.0, help="flicker strength (1: the reference case)")
    p.add_argument("--grain", type=float, default=0.0,
                   help="also add fine-grained flicker: per-frame grain of this sd (0-1 scale, 3x3-blurred), "
                        "uniform over the frame; the truth stays grain-free")
    p.add_argument("--grain-texture", action="store_true",
                   help="with --grain: the grain's amplitude follows the local texture (diffusion's texture jitter)")
    p.add_argument("--json", help="also write results to this file")
    p.add_argument("--save", help="also write every case's output frames to this .npz (uint8, keys clip/mode)")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    opts = json.loads(a.opts)
    if a.speed:  # its settings are the case's; a --width given with it was replaced without a word
        given = [n for n in ("clips", "modes", "window", "width", "height") if getattr(a, n) is not None]
        if given:
            p.error(f"--speed is the fixed case (bikes.mp4 at 640x480, table, window 15): drop --{given[0]}")
        a.clips, a.modes, a.window, a.width, a.height = "bikes.mp4", "table", "15", 640, 480
    a.window = "15" if a.window is None else a.window
    window = None if a.window in ("inf", "none") else int(a.window)
    results, saved = [], {}
    clips = (a.clips or "bikes.mp4,carphone_pristine.mp4").split(",")
    modes = (a.modes or "table,window").split(",")
    if a.height and not a.width:  # (a TypeError traceback in the resize)
        p.error("--height goes with --width (an exact size); --width alone keeps the aspect")
    if a.frames is None:  # an explicit --frames 48 with --speed was taken for the default and made 64
        a.frames = 64 if a.speed else 48
    for name in clips:
        clip, _ = load_clip(registry_clip(name), a.frames, a.width)
        if a.height:
            from flickerless.video import resize_frame

            clip = np.stack([resize_frame(f, (a.height, a.width)) for f in clip])
        truth, flick = flickering_pair(clip, seed=0, strength=a.strength)
        if a.grain:
            flick = add_grain(flick, a.grain, texture=a.grain_texture)
        for mode in modes:
            if a.warmup:
                run_case(clip[:8], truth[:8], flick[:8], mode, window, dev, a.batch, opts, a.keyframe_every)
            out, r = run_case(clip, truth, flick, mode, window, dev, a.batch, opts, a.keyframe_every)
            saved[f"{name}/{mode}"] = out
            r.update(clip=name, frames=len(clip), size=f"{clip.shape[2]}x{clip.shape[1]}", device=str(dev), opts=opts,
                     strength=a.strength if not a.grain else
                     f"{a.strength} + {'texture ' if a.grain_texture else ''}grain {a.grain}")
            results.append(r)
            print(json.dumps(r), flush=True)
    print()
    print("| clip | size | frames | mode | window | flicker | options | PSNR in -> out (gain) | temporal err in -> out (x lower) | s/frame | peak GPU GiB | case's peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['clip']} | {r['size']} | {r['frames']} | {r['mode']} | {r['window']} | {r['strength']} | {json.dumps(r['opts'])} | "
              f"{r['psnr_in']} -> {r['psnr_out']} (+{r['psnr_out'] - r['psnr_in']:.2f}) | "
              f"{r['temporal_in']} -> {r['temporal_out']} ({r['temporal_in'] / max(r['temporal_out'], 1e-9):.1f}x) | "
              f"{r['s_per_frame']} | {r['peak_gpu_GiB']} | {r['peak_rss_GiB']} |")
    if a.save:
        np.savez_compressed(a.save, **saved)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
