"""Session 12: correct each style frame with the low-passed difference to a first blend, then blend
again (or use the corrected frames as they are). Args: CLIP FRAMES WIDTH(0) VARIANTS (affine, gaussian
sigmas, again). Measured before detail restoration existed, so it runs with detail=False.

    PYTHONPATH=src python benchmarks/explore/two_pass_split.py carphone_pristine.mp4 48 0 affine,8,16,4,again
"""
import sys, torch
from flickerless import deflicker
from flickerless.blend.detail import _gaussian
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error
name = sys.argv[1]; n = int(sys.argv[2]); width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "0" else None
variants = sys.argv[4].split(",")
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
T = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
U = lambda x: (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()
def run(style):
    return T(deflicker(clip, style, mode="table", window=15, device="cpu", detail=False))
gauss = _gaussian  # the gaussian blur the tool itself uses
def rep(tag, o):
    print(f"{name} {tag}: {psnr(U(o), truth):.2f} dB, temporal {temporal_error(U(o), truth):.2f}", flush=True)
S = T(flick)
print("input", round(psnr(flick, truth), 2), round(temporal_error(flick, truth), 1))
B = run(flick); rep("one pass", B)
for v in variants:
    if v == "again":
        S2 = B
    elif v == "affine":
        S2 = torch.empty_like(S)
        for i in range(len(S)):
            for c in range(3):
                x, y = S[i, c].flatten(), B[i, c].flatten()
                A = torch.stack([x, torch.ones_like(x)], 1)
                sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
                S2[i, c] = S[i, c] * sol[0] + sol[1]
    else:
        s = float(v)
        S2 = S + gauss(B - S, s)
    S2 = S2.clamp(0, 1)
    rep(f"{v} corrected input", S2)
    rep(f"{v} two pass", run(U(S2)))
