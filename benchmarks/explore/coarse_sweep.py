"""Session 20: the coarse band of the default output (table, window 15) taken from a second table
blend over a longer window, gated by the guide (see coarse_gate.py), swept over the long window W,
the second blend's effort preset Q, the band's box size K (full-size pixels) and the gate's TAU.

    PYTHONPATH=src python benchmarks/explore/coarse_sweep.py DEVICE CLIP FRAMES WIDTH|0 FADE GRAIN \
        W,.. Q,.. K,.. TAU,..
"""
import importlib, sys, time
import torch
from flickerless import deflicker
from coarse_case import make_case
from flickerless.synthetic import psnr, temporal_error

D = importlib.import_module("flickerless.blend.deflicker")
dev, name, n, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None
fade, grain = float(sys.argv[5]), float(sys.argv[6])
ws, qs = sys.argv[7].split(","), sys.argv[8].split(",")
ks, taus = [int(x) for x in sys.argv[9].split(",")], [float(x) for x in sys.argv[10].split(",")]
clip, truth, flick = make_case(name, n, width, fade, grain)
tag = f"{name} {clip.shape[2]}x{clip.shape[1]}x{len(clip)} fade {fade} grain {grain}"
print(tag, "| input", round(psnr(flick, truth), 2), round(temporal_error(flick, truth), 2), flush=True)
deflicker(clip[:8], flick[:8], device=dev)  # warm-up (compilation)


def sync():
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


t = time.time(); a = deflicker(clip, flick, mode="table", window=15, device=dev); sync(); ta = time.time() - t
print(tag, "| window 15", round(psnr(a, truth), 2), round(temporal_error(a, truth), 2), f"{ta / len(clip):.4f} s/frame",
      flush=True)
tt = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float().to(dev)  # noqa: E731


def box(x, k):  # separable box of a (T, C, H, W) tensor, edge-replicated
    r = k // 2
    x = torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate")
    x = torch.nn.functional.avg_pool2d(x, (1, k), 1)
    x = torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate")
    return torch.nn.functional.avg_pool2d(x, (k, 1), 1)


af, gf = tt(a), tt(clip)
for w in ws:
    for q in qs:
        captured, orig = [], D.restore_detail

        def capture(blend, guide_blend, style, guide, **kw):
            captured.append(guide_blend * 255)
            return orig(blend, guide_blend, style, guide, **kw)

        D.restore_detail = capture
        t = time.time()
        b = deflicker(clip, flick, mode="table", window=None if w == "inf" else int(w), device=dev, quality=q)
        sync(); tb = time.time() - t
        D.restore_detail = orig
        bf, gb = tt(b), torch.stack(captured).float()
        for k in ks:
            d, dg = box(bf - af, k), box(gb - gf, k)
            for tau in taus:
                gate = torch.exp(-dg.square().mean(1, keepdim=True) / (255 * tau) ** 2) if tau else torch.ones_like(d[:, :1])
                out = (af + gate * d).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
                print(tag, f"| long {w} {q} (+{tb / ta:.2f}x time) k {k} tau {tau}:", round(psnr(out, truth), 2),
                      round(temporal_error(out, truth), 2), "gate", round(float(gate.mean()), 3), flush=True)
