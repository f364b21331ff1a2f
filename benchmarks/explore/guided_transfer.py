"""Negative result (session 12): transfer the guide's blending loss to the style through a local
linear model (guided-filter style, colour 3x3) fitted on (guide blend, style blend). Made things worse.
The guide blend here comes from a separate run with the guide as the style (fields differ a little).
Args: CLIP FRAMES [WIDTH] [MODE].

    PYTHONPATH=src python benchmarks/explore/guided_transfer.py carphone_pristine.mp4 48
"""
import sys, torch, time, itertools
from flickerless import deflicker
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import flickering_pair, psnr, temporal_error
name = sys.argv[1]; n = int(sys.argv[2]); width = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "0" else None
mode = sys.argv[4] if len(sys.argv) > 4 else "table"
clip, _ = load_clip(registry_clip(name), n, width)
truth, flick = flickering_pair(clip)
T = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
def run(style):
    return T(deflicker(clip, style, mode=mode, window=15, device="cpu", detail=False))
t0 = time.time()
Gb = run(clip); Sb = run(flick); St = run(truth)
print("runs", time.time() - t0, flush=True)
G = T(clip)
def box(x, r):
    return torch.nn.functional.avg_pool2d(x, 2 * r + 1, 1, r, count_include_pad=False)
def correct(Sb, Gb, G, r, eps):
    mI = box(Gb, r); mp = box(Sb, r)
    # cov(I_a, I_b) 3x3 and cov(I_a, p_c)
    B, C, H, W = Gb.shape
    cII = torch.empty(B, H, W, 3, 3); cIp = torch.empty(B, H, W, 3, 3)
    for a in range(3):
        for b in range(3):
            cII[..., a, b] = (box(Gb[:, a:a+1] * Gb[:, b:b+1], r) - mI[:, a:a+1] * mI[:, b:b+1])[:, 0]
            cIp[..., a, b] = (box(Gb[:, a:a+1] * Sb[:, b:b+1], r) - mI[:, a:a+1] * mp[:, b:b+1])[:, 0]
    A = torch.linalg.solve(cII + eps * torch.eye(3), cIp)  # (.., 3 guide, 3 style): p = A^T I
    A = A.permute(0, 3, 4, 1, 2).reshape(B, 9, H, W)
    A = box(A, r).reshape(B, 3, 3, H, W)
    d = G - Gb
    corr = torch.einsum("bgshw,bghw->bshw", A, d)
    return (Sb + corr).clamp(0, 1)
U = lambda x: (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()
print("input", psnr(flick, truth), temporal_error(flick, truth))
print("plain flick", psnr(U(Sb), truth), temporal_error(U(Sb), truth), " truth-style", psnr(U(St), truth), temporal_error(U(St), truth))
for r, eps in itertools.product([1, 2, 4], [1e-4, 1e-3, 1e-2]):
    o = U(correct(Sb, Gb, G, r, eps)); ot = U(correct(St, Gb, G, r, eps))
    print(f"r {r} eps {eps}: flick {psnr(o, truth):.2f} {temporal_error(o, truth):.2f}   truth-style {psnr(ot, truth):.2f} {temporal_error(ot, truth):.2f}", flush=True)
