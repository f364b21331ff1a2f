"""Session 33 (a tester's scripts, kept to reproduce BENCHMARKS.md "Session 33"): Make guide clips, consistent ground-truth stylisations and flickering inputs. -> /tmp/flicker_kinds/clips/*.npz"""
import os, numpy as np, cv2
cv2.setNumThreads(1)
from flickerless.demo import load_clip, registry_clip
from flickerless.video import resize_frame
D = "/tmp/flicker_kinds/clips/"
os.makedirs(D, exist_ok=True)
os.makedirs("/tmp/flicker_kinds/out", exist_ok=True)
T = 32

def guides():
    car, _ = load_clip(registry_clip("carphone_pristine.mp4"), T)            # 176x144
    bik, _ = load_clip(registry_clip("bikes.mp4"), T)                        # 640x272
    out = {"carphone": car,
           "bikes": np.stack([resize_frame(f, (136, 320)) for f in bik])}
    # bikes centre crop resized to 176x144 (for the cut clip)
    bc = np.stack([resize_frame(f[:, 154:486], (144, 176)) for f in bik])
    out["cut"] = np.concatenate([car[:16], bc[16:32]])                       # hard cut at 16
    fade = np.clip(1 - (np.arange(T) - 8) / 15.0, 0, 1)                       # 1 until 8, 0 from 23
    out["fade"] = np.round(car.astype(np.float32) * fade[:, None, None, None]).astype(np.uint8)
    out["static"] = np.repeat(car[:1], 24, 0)
    big = bik[0]
    out["pan"] = np.stack([big[64:208, 12 * t:12 * t + 176] for t in range(T)])  # 12 px/frame pan
    return out

def style_base(f):
    """consistent stylisation: edge-preserving smoothing + warm grade + dark edges (per frame, fixed params)"""
    x = cv2.edgePreservingFilter(f[..., ::-1].copy(), flags=1, sigma_s=30, sigma_r=0.3)[..., ::-1].astype(np.float32) / 255
    grade = np.array([[1.1, 0.1, 0.0], [0.0, 1.0, 0.05], [-0.1, 0.1, 0.75]], np.float32)
    x = np.clip(x @ grade.T + np.array([0.04, 0.01, -0.02], np.float32), 0, 1)
    g = cv2.GaussianBlur(f.mean(-1).astype(np.float32) / 255, (5, 5), 1.0)
    e = np.clip(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)) * 1.5, 0, 0.6)
    return np.clip(np.round(x * (1 - e[..., None]) * 255), 0, 255).astype(np.uint8)

def cv_style(f, ss, sr):
    return cv2.stylization(f[..., ::-1].copy(), sigma_s=ss, sigma_r=sr)[..., ::-1].copy()

def hsg(gt, rng):
    out = []
    for f in gt:
        hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
        x = cv2.cvtColor(hsv.round().astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32) / 255
        x = x ** rng.uniform(0.8, 1.25)
        out.append(np.clip(np.round(x * 255), 0, 255).astype(np.uint8))
    return np.stack(out)

def jpeg(gt, rng):
    out = []
    for f in gt:
        ok, b = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(8, 30))])
        out.append(cv2.imdecode(b, 1)[..., ::-1])
    return np.stack(out)

def jitter(gt, rng):
    out = []
    for f in gt:
        dx, dy = rng.uniform(-1.5, 1.5, 2)
        M = np.float32([[1, 0, dx], [0, 1, dy]])
        out.append(cv2.warpAffine(f, M, (f.shape[1], f.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)

def strokes(gt, rng):
    out = []
    h, w = gt.shape[1:3]
    for f in gt:
        over = f.copy()
        for _ in range(int(rng.integers(6, 13))):
            col = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                p2 = (p1[0] + int(rng.integers(-40, 40)), p1[1] + int(rng.integers(-40, 40)))
                cv2.line(over, p1, p2, col, int(rng.integers(2, 6)), cv2.LINE_AA)
            else:
                cv2.circle(over, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(3, 12)), col, -1, cv2.LINE_AA)
        out.append(np.round(0.3 * f + 0.7 * over).astype(np.uint8))
    return np.stack(out)

if __name__ == "__main__":
    G = guides()
    for name, g in G.items():
        rng = np.random.default_rng(0)
        gt = np.stack([style_base(f) for f in g])
        d = {"guide": g, "gt": gt, "none": gt.copy(), "hsg": hsg(gt, rng), "jpeg": jpeg(gt, rng),
             "jitter": jitter(gt, rng), "strokes": strokes(gt, rng)}
        if name in ("carphone", "cut"):
            d["gt_cv"] = np.stack([cv_style(f, 60, 0.45) for f in g])
            d["cvparam"] = np.stack([cv_style(f, rng.uniform(10, 120), rng.uniform(0.15, 0.7)) for f in g])
        np.savez_compressed(D + name + ".npz", **d)
        print(name, g.shape, {k: v.shape for k, v in d.items()})
