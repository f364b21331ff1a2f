"""The fused kernels against the torch passes they replace, on the same inputs.

numba (CPU) runs everywhere numba is installed, CI included; Triton (CUDA) is skipped without a GPU:
run `make test` or `pytest tests/test_kernels.py` on a GPU machine.
"""

import importlib

import pytest
import torch

import flickerless.blend.patchmatch as pm


def _backend(module, device):
    try:
        mod = importlib.import_module(f"flickerless.blend.{module}")
    except ImportError:
        return pytest.param(None, device, marks=pytest.mark.skip(reason=f"{module} not importable"))
    ok = mod.available() and (device == "cpu" or torch.cuda.is_available())
    return pytest.param(mod, device, marks=() if ok else pytest.mark.skip(reason=f"{module} needs {device}"), id=module)


BACKENDS = [_backend("cpu_kernels", "cpu"), _backend("kernels", "cuda")]


@pytest.fixture(scope="module")
def frames(small_clip):
    from flickerless.synthetic import flickering_pair

    _, flick = flickering_pair(small_clip)
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    g, s = to(small_clip), to(flick)
    return g[1:5], g[0:4], s[0:4]


@pytest.mark.parametrize("mod, device", BACKENDS)
def test_vote_matches_torch(mod, device, frames):
    tgt, src, sty = (t.to(device) for t in frames)
    keys = torch.arange(4, device=device) * 7 + 3
    nnf = pm.initialize(4, tgt.shape[-2:], src.shape[-2:], "random", keys, device)
    for size, samples in ((13, 3), (5, None)):
        offs = pm.patch_offsets(size, samples)
        torch.testing.assert_close(mod.vote(sty, nnf, offs).to(device), pm.vote(sty, nnf, offs), atol=1e-5, rtol=0)
    # 4 channels: a guide with a table entry's weight map, voted together (error-weighted blending)
    four = torch.cat([sty, sty[:, :1] * 3 + 1], 1)
    offs = pm.patch_offsets(5, None)
    torch.testing.assert_close(mod.vote(four, nnf, offs).to(device), pm.vote(four, nnf, offs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("style_channels", [3, 4])
@pytest.mark.parametrize("mod, device", BACKENDS)
def test_iteration_matches_torch(mod, device, frames, style_channels):
    """One iteration against the torch passes, with the usual three style channels (the CPU kernel's unrolled,
    unclamped path for a patch inside the frame) and with four (its general path)."""
    tgt, src, sty = (t.to(device) for t in frames)
    if style_channels == 4:
        sty = torch.cat([sty, sty[:, :1].flip(-1)], 1)
    keys = torch.arange(4, device=device) * 7 + 3
    nnf0 = pm.initialize(4, tgt.shape[-2:], src.shape[-2:], "random", keys, device)
    offs = pm.patch_offsets(13, 3)
    est = pm.vote(sty, nnf0, offs)
    gw = 10.0
    td = pm.describe(torch.cat((tgt * gw**0.5, est), 1), offs)
    sd = pm.describe(torch.cat((src * gw**0.5, sty), 1), offs)
    cost = pm.patch_cost(td, sd, nnf0, src.shape[-2:], len(offs))
    n1, c1 = pm.propagate(nnf0, cost, td, sd, src.shape[-2:], len(offs))
    n1, c1 = pm.random_search(n1, c1, td, sd, src.shape[-2:], len(offs), 16, keys, salt=5)
    n2, c2 = mod.iteration(tgt, est, src, sty, nnf0, keys, offs, gw, 16, 5)
    same = (n1 == n2.to(device)).all(1)
    # float sums in another order can flip a near-tie: allow a handful of pixels, exact costs elsewhere
    assert same.float().mean().item() > 0.999
    assert (c1 - c2.to(device))[same].abs().max().item() < 1e-4


@pytest.mark.parametrize("mod, device", BACKENDS)
def test_level_laid_out_once_gives_the_same_iteration(mod, device, frames):
    """``Level`` lays a pyramid level's images out once for all its iterations and votes the estimate
    straight into the iteration's layout: the fields and costs are exactly those of voting, then
    iterating, from the images as given (also with a 4-channel style, padded to 4 as the guide is)."""
    tgt, src, sty = (t.to(device) for t in frames)
    keys = torch.arange(4, device=device) * 7 + 3
    nnf = pm.initialize(4, tgt.shape[-2:], src.shape[-2:], "random", keys, device)
    for style in (sty, torch.cat([sty, sty[:, :1] * 0.5], 1)):
        level = mod.Level(tgt, src, style)
        for size, salt in ((13, 5), (5, 7)):
            offs = pm.patch_offsets(size, 3)
            n1, c1 = mod.iteration(tgt, mod.vote(style, nnf, offs), src, style, nnf, keys, offs, 10.0, 16, salt)
            n2, c2 = level.iteration(nnf, keys, offs, 10.0, 16, salt)
            assert torch.equal(n1, n2) and torch.equal(c1, c2)
            nnf = n2


@pytest.mark.parametrize("mod, device", BACKENDS)
def test_remap_matches_torch(mod, device, frames):
    tgt, src, sty = (t.to(device) for t in frames)
    keys = torch.arange(4, device=device)
    backend = "numba" if device == "cpu" else "triton"
    a = pm.remap(sty, tgt, src, pm.PatchMatchOptions(backend="torch"), keys)
    b = pm.remap(sty, tgt, src, pm.PatchMatchOptions(backend=backend), keys)
    assert (a - b).abs().mean().item() * 255 < 0.5


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two CUDA GPUs")
def test_triton_kernels_on_a_second_gpu(frames):
    """Triton launches on the current device; the kernels must follow the tensors to cuda:1 (any GPU
    index can be chosen) and agree there with the torch passes."""
    from flickerless.blend import kernels

    if not kernels.available():
        pytest.skip("Triton not importable")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)
    assert torch.cuda.current_device() != dev.index
    tg, sg, ss = (t.to(dev) for t in frames)
    fused = pm.remap(ss, tg, sg, pm.PatchMatchOptions(patch_sizes=(7, 5), iterations=2, backend="triton"))
    plain = pm.remap(ss, tg, sg, pm.PatchMatchOptions(patch_sizes=(7, 5), iterations=2, backend="torch"))
    assert fused.device == dev and (fused - plain).abs().mean() * 255 < 0.5
    # from a thread of its own, whose current device starts at cuda:0 (the command line's several devices)
    import threading

    got = {}
    t = threading.Thread(target=lambda: got.setdefault("out", pm.remap(
        ss, tg, sg, pm.PatchMatchOptions(patch_sizes=(7, 5), iterations=2, backend="triton"))))
    t.start()
    t.join()
    assert torch.equal(got["out"], fused)


def test_cpu_patch_cost_stops_early_only_where_the_decision_is_the_same():
    """The numba patch cost stops summing once its mean can no longer fall below the best so far.
    Whatever the bound, it must keep or drop a candidate as the full sum does, and give the full sum's
    value exactly where it is kept (the agreement with torch above allows near-tie flips, so it would
    not catch a slip here)."""
    import numpy as np

    from flickerless.blend import cpu_kernels as ck

    if not ck.available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(0)
    offs = np.asarray(pm.patch_offsets(7, None), dtype=np.int64).reshape(-1, 2)
    for c, c2 in ((3, 3), (3, 4)):  # the unrolled sums of the usual case, and the loops
        def img(k):
            return torch.from_numpy(rng.random((1, k, 24, 24), dtype=np.float32))

        tgt, src = ck._pack(img(c), img(c2), c2), ck._pack(img(c), img(c2), c2)  # as a Level lays them out
        tp = np.empty((len(offs), tgt.shape[3]), np.float32)
        for _ in range(200):
            y, x, qy, qx = rng.integers(0, 24, 4)
            ck._target_patch(tgt, 0, y, x, offs, tp)
            full = ck._cost(tp, src, c, c2, 0, qy, qx, offs, np.float32(10.0), np.inf)
            sy, sx = np.clip(qy + offs[:, 0], 0, 23), np.clip(qx + offs[:, 1], 0, 23)
            d = tp[:, :c + c2] - src[0, sy, sx, :c + c2]
            expect = (10.0 * (d[:, :c] ** 2).sum(1) + (d[:, c:] ** 2).sum(1)).mean()
            assert full == pytest.approx(expect, rel=1e-5)
            for bound in (full * 0.5, full * 0.999, full, full * 1.001, full * 2, rng.random() * 2 * full):
                got = ck._cost(tp, src, c, c2, 0, qy, qx, offs, np.float32(10.0), bound)
                assert (got < bound) == (full < bound)
                if full < bound:
                    assert got == full


try:  # a probe of the Triton patch cost on its own: a kernel of this module calling kernels._cost
    import triton
    import triton.language as tl

    from flickerless.blend.kernels import _cost as _triton_cost
except ImportError:
    triton = None

if triton is not None:

    @triton.jit
    def _cost_probe(tg, te, sg, ss, where, bounds, out, H, W, offs_ptr, S, gw, N,
                    CP: tl.constexpr, PS: tl.constexpr, BLOCK: tl.constexpr):
        """out[i] = the patch cost at (y, x) -> (qy, qx) = where[i] with the bound bounds[i]."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < N
        py = tl.load(where + 4 * i, mask=m, other=0)
        px = tl.load(where + 4 * i + 1, mask=m, other=0)
        qy = tl.load(where + 4 * i + 2, mask=m, other=0)
        qx = tl.load(where + 4 * i + 3, mask=m, other=0)
        bound = tl.load(bounds + i, mask=m, other=float("inf"))
        c = _triton_cost(tg, te, sg, ss, 0, py, px, qy, qx, H, W, H, W, offs_ptr, S, gw, m, bound, CP, PS, BLOCK)
        tl.store(out + i, c, mask=m)


@pytest.mark.skipif(triton is None or not torch.cuda.is_available(), reason="needs Triton and a CUDA GPU")
def test_triton_patch_cost_stops_early_only_where_the_decision_is_the_same():
    """The Triton twin of the numba test above: whatever the bound, a candidate is kept or dropped as
    with the full sum, and where kept its cost is the full sum's value exactly."""
    from flickerless.blend import kernels

    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    imgs = [torch.rand(1, 3, 24, 24, generator=g).to(dev) for _ in range(4)]
    cp = kernels._cp(3)
    tgt, src = kernels._last(imgs[0], imgs[1], cp=cp), kernels._last(imgs[2], imgs[3], cp=cp)  # as a Level lays them
    tg, te, sg, ss = tgt, tgt[..., cp:], src, src[..., cp:]
    offs = kernels._offsets_tensor(pm.patch_offsets(7, None), dev)
    n = 200
    where = torch.randint(0, 24, (n, 4), generator=g, dtype=torch.int32).to(dev).contiguous()

    def cost(bounds):
        out = torch.empty(n, device=dev)
        _cost_probe[(triton.cdiv(n, 64),)](tg, te, sg, ss, where, bounds.contiguous(), out, 24, 24, offs,
                                           offs.numel() // 2, 10.0, n, CP=cp, PS=2 * cp, BLOCK=64)
        return out

    full = cost(torch.full((n,), float("inf"), device=dev))
    assert torch.isfinite(full).all() and (full > 0).all()
    o = torch.tensor(pm.patch_offsets(7, None), device=dev)
    w = where.long()
    ty, tx = (w[:, None, 0] + o[None, :, 0]).clamp(0, 23), (w[:, None, 1] + o[None, :, 1]).clamp(0, 23)
    sy, sx = (w[:, None, 2] + o[None, :, 0]).clamp(0, 23), (w[:, None, 3] + o[None, :, 1]).clamp(0, 23)
    sq = [(imgs[k][0][:, ty, tx] - imgs[k + 2][0][:, sy, sx]) ** 2 for k in (0, 1)]  # guide, style: (3, n, S)
    torch.testing.assert_close(full, (10.0 * sq[0].sum(0) + sq[1].sum(0)).mean(1), rtol=1e-5, atol=0)
    factors = [0.5, 0.999, 1.0, 1.001, 2.0]
    for bound in [full * f for f in factors] + [full * 2 * torch.rand(n, generator=g).to(dev)]:
        got = cost(bound)
        assert torch.equal(got < bound, full < bound)
        kept = full < bound
        assert torch.equal(got[kept], full[kept])


_WARM_UP_PROBE = """
import sys, torch
from flickerless.blend import kernels
from flickerless.blend.deflicker import run_deflicker, warm_up
from flickerless.blend.frames import TensorFrames

def variants():
    out = 0
    for fn in (kernels._iteration_kernel, kernels._vote_kernel):
        caches = getattr(fn, "device_caches", None)
        if caches is None:
            sys.exit(3)  # a Triton without per-device caches: nothing to count
        out += sum(len(c[0]) for c in caches.values())
    return out

dev, size, warm = torch.device("cuda"), (90, 134), sys.argv[1] == "warm"
if warm:
    warm_up(dev, size, channels=4)
before = variants()
g = torch.Generator(device="cpu").manual_seed(1)
frames = lambda c: TensorFrames(torch.rand(12, c, *size, generator=g).to(dev))
run_deflicker(frames(3), frames(4), lambda i, img: None, device=dev, batch=5, cuts=False)
print(before, variants())
"""


@pytest.mark.skipif(triton is None or not torch.cuda.is_available(), reason="needs Triton and a CUDA GPU")
@pytest.mark.parametrize("warm", ["warm", "cold"])
def test_warm_up_loads_every_kernel_variant_the_run_then_launches(warm):
    """The command line warms a GPU up while it decodes (deflicker.warm_up): its four frames at the run's
    size and settings (with alpha here) must load every Triton kernel variant a 12-frame run then
    launches (two frames did not: they never remap a stored table entry). A fresh process, as a test
    before this one may have loaded them; cold, the run loads its own."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", _WARM_UP_PROBE, warm], capture_output=True, text=True, env=env)
    if r.returncode == 3:
        pytest.skip("this Triton keeps no per-device kernel caches to count")
    assert r.returncode == 0, r.stderr
    before, after = map(int, r.stdout.split())
    if warm == "warm":
        assert before > 0 and after == before
    else:
        assert before == 0 and after > 0


@pytest.mark.skipif(not __import__("flickerless.blend.cpu_kernels", fromlist=["x"]).available()
                    or (__import__("os").cpu_count() or 1) < 2, reason="numba's threads on a machine of 2+ CPUs")
def test_the_cpu_kernels_keep_torch_s_thread_count():
    """Numba's OpenMP layer set the process's OpenMP threads (torch's too) to every CPU at its first loop:
    a run held to one thread (OMP_NUM_THREADS=1) did its later torch work on all of them, and a diffusion
    job resumed in a new process decoded with other rounding than the uninterrupted one. In a fresh
    process, as the thread count is set once there."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom flickerless.blend.deflicker import deflicker\n"
            "x = torch.rand(12, 3, 256, 320, generator=torch.Generator().manual_seed(0))\n"
            "deflicker(x, x.clone(), window=2, patch_sizes=(5,), iterations=1, device='cpu')\n"
            "print(torch.get_num_threads())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "1"


@pytest.mark.skipif(not __import__("flickerless.blend.cpu_kernels", fromlist=["x"]).available(), reason="needs numba")
def test_the_cpu_kernels_compile_where_numba_has_nowhere_to_cache_them():
    """An install read-only to its user with a HOME they cannot write (a Docker image run as another
    user) leaves numba no folder for its cache: ``cache=True`` raised at import, and every CPU deflicker
    ended in that traceback. The kernels are compiled uncached then, said once. In a fresh process, with
    numba's cache folders taken away."""
    import os
    import subprocess
    import sys

    code = ("import logging\nimport numba.core.caching as c\n"
            "c.CacheImpl._locator_classes = []  # no folder numba can write\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
            "import torch\nimport flickerless.blend.patchmatch as pm\n"
            "mod = pm._kernels('auto', torch.device('cpu'))\n"
            "assert mod is not None and mod.__name__.endswith('cpu_kernels'), mod\n"
            "sty = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(0))\n"
            "nnf = pm.initialize(2, (24, 32), (24, 32), 'random', torch.tensor([3, 10]), torch.device('cpu'))\n"
            "offs = pm.patch_offsets(5, None)\n"
            "torch.testing.assert_close(mod.vote(sty, nnf, offs), pm.vote(sty, nnf, offs), atol=1e-5, rtol=0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("NUMBA_CACHE_DIR") == 1, r.stderr
