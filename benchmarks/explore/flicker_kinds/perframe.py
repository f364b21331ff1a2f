"""Session 33 (a tester's scripts, kept to reproduce BENCHMARKS.md "Session 33"): python perframe.py CLIP FLICKER MODE TAG : per-frame PSNR (in, out), mean luma (gt, in, out), sharpness ratio out/gt"""
import sys, numpy as np, cv2
clip, fl, mode, tag = sys.argv[1:5]
d = np.load(f"/tmp/flicker_kinds/clips/{clip}.npz")
gt = d["gt_cv" if fl == "cvparam" else "gt"]; s = d[fl]
o = np.load(f"/tmp/flicker_kinds/out/{clip}_{fl}_{mode}_{tag}.npy")
def ps(a, b):
    m = np.mean((a.astype(float) - b.astype(float)) ** 2); return 99 if m == 0 else 10 * np.log10(255**2 / m)
lap = lambda f: cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
print("t  psnr_in psnr_out  luma_gt luma_in luma_out  sharp_in sharp_out  RGBmean_out-gt")
for t in range(len(gt)):
    dm = o[t].reshape(-1, 3).mean(0) - gt[t].reshape(-1, 3).mean(0)
    print(f"{t:2d} {ps(s[t],gt[t]):7.2f} {ps(o[t],gt[t]):7.2f}  {gt[t].mean():7.2f} {s[t].mean():7.2f} {o[t].mean():7.2f}  "
          f"{lap(s[t])/max(lap(gt[t]),1e-9):6.3f} {lap(o[t])/max(lap(gt[t]),1e-9):6.3f}  {np.round(dm,1)}")
