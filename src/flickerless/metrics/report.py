"""A self-contained HTML report of an evaluation: the numbers, per-frame plots (inline SVG) and sample
frames side by side (source, output) as base64 PNGs. No external resources: it opens offline, can be
mailed as one file, and renders the same in any browser."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from ..errors import OutputError
from .evaluate import METRICS, EvalResult
from .frames import as_uint8

__all__ = ["write_report", "render_report", "svg_plot"]

_PLOTTED = ("pixel_mse", "warp_error", "clip", "clip_consistency", "aesthetic", "pose_mse")


def _png_b64(img: np.ndarray, max_width: int = 360) -> str:
    import cv2

    h, w = img.shape[:2]
    if w > max_width:
        img = cv2.resize(img, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise OutputError("could not encode a sample frame as PNG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    a = abs(v)
    return f"{v:.4g}" if a and (a < 1e-2 or a >= 1e4) else f"{v:.3f}" if a < 10 else f"{v:.2f}"


def svg_plot(values, title: str, xlabel: str = "frame", width: int = 640, height: int = 200) -> str:
    """A line plot of ``values`` (NaN leaves a gap) as an inline ``<svg>`` element with axes and labels."""
    v = np.asarray(values, np.float64)
    ml, mr, mt, mb = 76, 16, 28, 36
    pw, ph = width - ml - mr, height - mt - mb
    fin = v[np.isfinite(v)]
    lo, hi = (float(fin.min()), float(fin.max())) if len(fin) else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-6), hi + 0.5 * max(abs(hi), 1e-6)
    n = len(v)

    def xy(i, y):
        x = ml + (pw * i / (n - 1) if n > 1 else pw / 2)
        return x, mt + ph * (1 - (y - lo) / (hi - lo))

    lines, seg = [], []
    for i, y in enumerate(v):
        if np.isfinite(y):
            seg.append("%.1f,%.1f" % xy(i, y))
        elif seg:
            lines.append(seg)
            seg = []
    if seg:
        lines.append(seg)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        yv = lo + frac * (hi - lo)
        y = mt + ph * (1 - frac)
        parts.append(f'<line x1="{ml - 4}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(yv)}</text>')
    for i in sorted({0, n // 2, n - 1}) if n else []:
        x = xy(i, lo)[0]
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle" font-size="11">{i}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{height - 4}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>')
    for seg in lines:
        if len(seg) == 1:
            x, y = seg[0].split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="#c0392b"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="#c0392b" stroke-width="1.8" points="{" ".join(seg)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(result: EvalResult, video, source=None, samples: int = 4, title: str = "flickerless eval",
                  names: dict | None = None) -> str:
    """The report as an HTML string. video/source: the frames evaluated ((T, H, W, 3) uint8 or
    (T, 3, H, W) float); ``samples`` evenly spaced frames are shown side by side; ``names``: labels such
    as {"video": "out.mp4", "source": "in.mp4"}."""
    out = as_uint8(video, "video")
    src = as_uint8(source, "source") if source is not None else None
    names = names or {}
    esc = html.escape
    rows = []
    for n, (desc, better, _) in METRICS.items():
        if n in result.values:
            rows.append(f"<tr><td>{n}</td><td class=num>{_fmt(result.values[n])}</td><td class=better>{better} is better</td>"
                        f"<td>{esc(desc)}</td></tr>")
        elif n in result.skipped:
            rows.append(f"<tr class=skipped><td>{n}</td><td class=num>skipped</td><td></td>"
                        f"<td>{esc(result.skipped[n])}</td></tr>")
    plots = []
    for n in _PLOTTED:
        if n in result.per_frame and len(result.per_frame[n]):
            pair = n in ("pixel_mse", "warp_error", "clip_consistency")
            plots.append(svg_plot(result.per_frame[n], f"{n} per {'frame pair (t, t+1)' if pair else 'frame'}",
                                  "t (pair t, t+1)" if pair else "frame"))
    idx = sorted(set(np.linspace(0, len(out) - 1, max(1, min(samples, len(out)))).round().astype(int).tolist()))
    figs = []
    for i in idx:
        cells = []
        if src is not None and i < len(src):
            cells.append(f'<figure><img alt="source frame {i}" src="data:image/png;base64,{_png_b64(src[i])}">'
                         f"<figcaption>source {i}</figcaption></figure>")
        cells.append(f'<figure><img alt="output frame {i}" src="data:image/png;base64,{_png_b64(out[i])}">'
                     f"<figcaption>output {i}</figcaption></figure>")
        figs.append(f'<div class="pair">{"".join(cells)}</div>')
    info = "".join(f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in result.info.items())
    label = " vs ".join(esc(str(names[k])) for k in ("video", "source") if names.get(k))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}} td.num{{text-align:right;font-variant-numeric:tabular-nums}}
td.better{{white-space:nowrap;color:#555}} tr.skipped td{{color:#888}} .pair{{display:flex;gap:8px;margin-bottom:8px}} figure{{margin:0}}
figcaption{{font-size:12px;color:#555}} svg.plot{{display:block;margin:8px 0}}
</style></head>
<body>
<h1>{esc(title)}</h1>
<p>{label}</p>
<h2>Metrics</h2>
<table id="metrics"><tr><th>metric</th><th>value</th><th></th><th>definition / note</th></tr>{"".join(rows)}</table>
<h2>Per frame</h2>
<div id="plots">{"".join(plots) or "<p>no per-frame series (no temporal metric was computed)</p>"}</div>
<h2>Sample frames</h2>
<div id="samples">{"".join(figs)}</div>
<h2>How computed</h2><ul>{info}</ul>
<script>
window.addEventListener("load", function () {{
  var ok = Array.prototype.filter.call(document.images, function (im) {{ return im.complete && im.naturalWidth > 0; }});
  document.body.setAttribute("data-images-decoded", String(ok.length));
}});
</script>
</body></html>
"""


def write_report(path, result: EvalResult, video, source=None, samples: int = 4, title: str = "flickerless eval",
                 names: dict | None = None) -> Path:
    """Write :func:`render_report` to ``path`` (an .html file). Returns the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"{path}: folder {path.parent} does not exist")
    text = render_report(result, video, source, samples=samples, title=title, names=names)
    from ..video import write_whole

    try:
        write_whole(path, text)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the report ({e})") from e
    return path
