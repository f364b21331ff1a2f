"""What the window-blend probes of sessions 13-14 share (shifted_window, style_weight, taper,
wiener_gate): the benchmark's flickering case as tensors, and each frame's neighbours remapped onto
it through the guide, style and guide voted together, with the tool's guide-error weight."""
import torch
import torch.nn.functional as F

from flickerless.blend.patchmatch import PatchMatchOptions, final_vote, patchmatch
from flickerless.demo import load_clip, registry_clip
from flickerless.synthetic import add_grain, flickering_pair


def to_tensor(a):
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [0, 1]."""
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255


def to_uint8(x):
    """float (T, 3, H, W) -> uint8 (T, H, W, 3), clamped and rounded."""
    return (x.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().byte().numpy()


def flickering_case(name, n, width=None, grain=0.0, texture=False):
    """(truth, flick) uint8 and (G, S) float tensors of the benchmark's case on ``n`` frames of a
    registry clip (``width``: resized), optionally with grain (:func:`flickerless.synthetic.add_grain`)."""
    torch.set_num_threads(2)
    clip, _ = load_clip(registry_clip(name), n, width)
    truth, flick = flickering_pair(clip)
    if grain:
        flick = add_grain(flick, grain, texture=texture)
    return truth, flick, to_tensor(clip), to_tensor(flick)


def neighbours(G, S, i, span, opts=None, sigma=0.05):
    """Frames within ``span`` of i (not i) remapped onto i: (js, style votes, guide votes, guide error
    (5x5 mean of the squared guide difference), weight exp(-error / sigma^2))."""
    opts = opts or PatchMatchOptions()
    n = len(G)
    js = [j for j in range(max(0, i - span), min(n, i + span + 1)) if j != i]
    nnf = patchmatch(G[i:i + 1].expand(len(js), -1, -1, -1), G[js], S[js], opts)
    v = final_vote(torch.cat([S[js], G[js]], 1), nnf, opts)
    err = F.avg_pool2d((v[:, 3:] - G[i]).square().mean(1, keepdim=True), 5, 1, 2, count_include_pad=False)
    return js, v[:, :3], v[:, 3:], err, torch.exp(-err / sigma**2)
