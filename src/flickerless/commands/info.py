"""``flickerless info CLIP...``: what the tool will read from a clip, before any work.

Frame count, rate (and a variable rate's spread), size as shown (rotation, pixel shape), codec, colour
(HDR, wide gamut), interlacing, transparency, sound, and whether the clip is held in RAM or read
through a file: the facts behind most surprises (a style one frame short, a portrait phone clip, HLG
footage, a 1080i camcorder clip), each said with what deflicker and run do about it.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="what is read from a clip: frames, fps, size as shown, codec, HDR, interlacing, alpha, sound",
        description="Say what flickerless reads from each clip (a video file or a folder of images): its frame "
        "count, frame rate (a variable rate's spread), size as shown (after rotation and pixel shape), codec, "
        "colour description (HDR, wide gamut), interlacing, transparency, sound, and how it is held while "
        "working. Given two clips, it also says whether they agree as a guide and its style (frames and size), "
        "and the option that makes them work where they do not.",
    )
    p.add_argument("clips", nargs="+", metavar="CLIP", help="video file or folder of images")
    p.add_argument("--json", action="store_true", help="one JSON object per clip, a line each; for two clips one more, "
                   "kind \"pair\", saying whether they agree as a guide and its style")
    p.set_defaults(func=cmd_info)


def describe(path) -> dict:
    """What is read from a clip, as plain values (what ``--json`` prints)."""
    from .. import video

    path = Path(path)
    info = video.probe(path)
    size = info.frames * info.width * info.height * 3
    out = {"path": str(path), "frames": info.frames, "width": info.width, "height": info.height,
           "fps": round(info.fps, 6), "duration_s": round(info.frames / info.fps, 3) if info.fps else None,
           "pixel_aspect": str(info.pixel_aspect), "interlaced": info.interlaced, "alpha": info.alpha,
           "lost_at_start": info.lost_at_start,
           "colour": None if info.colour is None else video.colour_name(info.colour),
           "bytes_uncompressed": size, "held_in_ram": size <= video.MEMORY_LIMIT}
    out.update(video.stream_facts(path))
    if out["kind"] == "images":
        video.check_images(path)  # sizes and files a run would stop at, said before it
        return out
    if not info.frames:  # "frames 0, size 0x0", exit 0, and a pair's advice of --frames 0:0, which is refused
        from ..errors import InputError

        raise InputError(f"{path}: has no frames (its {out['codec']} video stream holds none that decode): eval, "
                         "deflicker and run refuse it; write it again from its source")
    out["cut_short"] = _cut_short(path)
    times = video.frame_times(path, info.frames)
    if times is not None:
        steps = times[1:] - times[:-1]
        out.update(variable_rate=True, min_step_s=round(float(steps.min()), 6), max_step_s=round(float(steps.max()), 6),
                   duration_s=round(float(times[-1] - times[0]), 3))
    else:
        out["variable_rate"] = False
    cut = out["cut_short"]
    if cut and cut["decode"] < info.frames:  # eval, deflicker and run stop at the first that does not decode
        cut["stops"] = True  # (the pair's advice gave the count held, and following it stopped there)
        if cut["decode"]:
            n = out["frames"] = cut["decode"]
            if times is not None and len(times) > n:
                out["duration_s"] = round(float(times[n] - times[0]), 3)
            elif info.fps:
                out["duration_s"] = round(n / info.fps, 3)
    return out


def _cut_short(path) -> dict | None:
    """Whether a video file ends before its last frame (a copy or download that stopped): a packet cut off
    at the file's end, or fewer packets than its header counts. It was said as a good clip of the frames
    it holds, and eval then failed at the first that does not decode. Only then is it decoded (without
    threads, as the commands read a damaged file), to count the frames that do. Returns None for a whole
    file, else {"header_frames": count or None where the header has none, "in_file", "decode"} (and
    ``"stops": True``, from :func:`describe`, where the commands stop before the frames the clip says)."""
    import av

    from .. import video

    packets = video._shown_packets(path)  # the pass probe made already (cached): the file is not read again
    header, in_file = int(packets.frames or 0), packets.stored
    if not packets.corrupt and header <= in_file:
        return None
    decoded = 0
    container = video._open_container(Path(path))
    try:
        for _ in video._frames(container, video._video_stream(container, path)):
            decoded += 1
    except av.error.FFmpegError:  # type: ignore[attr-defined]
        pass
    finally:
        container.close()
    return {"header_frames": header or None, "in_file": in_file, "decode": decoded}


def _lines(d: dict) -> list[str]:
    from fractions import Fraction

    rows = [d["path"]]
    rate = f"{d['fps']:.4g} fps"
    if d.get("variable_rate"):
        rate += f", variable: {d['min_step_s']:.4g}-{d['max_step_s']:.4g} s between frames (each frame keeps its time)"
    dur = "" if d["duration_s"] is None else f"{d['duration_s']:.2f} s, "
    rows.append(f"  frames      {d['frames']} ({dur}{rate})")
    size = f"{d['width']}x{d['height']}"
    if d.get("turns") or d.get("mirrored"):
        turn = {0: "", 1: "a quarter turn anticlockwise", 2: "half a turn", 3: "a quarter turn clockwise"}[d["turns"]]
        if d.get("mirrored"):
            turn = "mirrored left to right" + (f", then {turn}" if turn else "")
        size += f" upright (stored {d['stored_width']}x{d['stored_height']}, {turn} on reading)"
    aspect = Fraction(d["pixel_aspect"])
    if aspect != 1:
        size += f"; pixels shown {aspect} as wide as high: {round(d['width'] * aspect)}x{d['height']} on screen"
    rows.append(f"  size        {size}")
    if d["kind"] == "images":
        rows.append(f"  images      {', '.join(d['formats'])}, in natural order: {d['first']} ... {d['last']}")
    else:
        rows.append(f"  video       {d['codec']}, {d['pix_fmt']}" + (f", {d['bits']}-bit" if d.get("bits") else ""))
    if d["colour"]:
        hdr = "HDR" if any(k in d["colour"] for k in ("HLG", "PQ")) else "wide gamut"
        rows.append(f"  colour      {hdr}: {d['colour']} (worked on as its code values; deflicker's video output "
                    "says the same, run advises converting to SDR)")
    if d.get("lost_at_start"):
        rows.append(f"  damaged     the first {d['lost_at_start']} frames cannot be decoded (they refer to a keyframe "
                    "the file lacks: a clip cut without re-encoding); frame 0 is the first that decodes")
    cut = d.get("cut_short")
    if cut:
        held = (f"the header says {cut['header_frames']} frames and the file holds {cut['in_file']}"
                if cut["header_frames"] else f"the file holds {cut['in_file']} frames, the last cut off")
        n, name = cut["decode"], Path(d["path"])
        if cut.get("stops"):
            rows.append(f"  damaged     cut short: {held}; frames 0-{n - 1} decode, and eval, deflicker and run stop "
                        f"at frame {n}: take those with --frames 0:{n}, or save them as a clip of their own (ffmpeg "
                        f"-i {name.name} -frames:v {n} {name.stem}_first{n}.mp4)" if n else
                        f"  damaged     cut short: {held}; none of them decode: write it again from its source")
        else:
            rows.append(f"  damaged     cut short: {held}; all {n} decode")
    if d["interlaced"]:
        rows.append("  interlaced  yes: deinterlace it first, e.g. ffmpeg -i CLIP -vf bwdif progressive.mp4")
    if d["alpha"]:
        rows.append("  alpha       yes: deflicker blends it with the colour and keeps it in a PNG folder, WebM, "
                    "ProRes 4444 or FFV1 output; other outputs, and run, read the colour alone")
    if d["kind"] == "video":
        rows.append(f"  sound       {d['sound'] or 'none'}")
    b = d["bytes_uncompressed"]
    amount = f"{b / 1e9:.3g} GB" if b >= 1e9 else f"{b / 1e6:.3g} MB"
    rows.append(f"  working     {amount} uncompressed: " + (
        "held in RAM" if d["held_in_ram"] else "over the 1 GiB in-memory limit: decoded as the work goes, or "
        "through a file (--tmp), not held in RAM"))
    return rows


def count_advice(g: int, s: int, g_fps: float | None = None, s_fps: float | None = None,
                 g_lost: int = 0, s_lost: int = 0) -> str:
    """What to do about a guide of ``g`` frames and a style of ``s``: ``--frames 0:N`` takes style frame k
    for guide frame k from 0, which is right only for two clips that start at the same frame. Two videos
    as long as each other at different rates (``g_fps``, ``s_fps``; None for a folder, whose rate says
    nothing) are one resampled from the other, and do not pair frame for frame at all: that hint paired 35
    of 40 frames wrongly. ``g_lost``, ``s_lost``: frames at the start that cannot be decoded (a clip cut
    without re-encoding); where they make up the difference, the clips start apart and that hint paired
    every frame that many off."""
    common = min(g, s)
    shift = g_lost - s_lost
    if shift and g + g_lost == s + s_lost:
        lacks, has, role = ("guide", "style", "STYLE") if shift > 0 else ("style", "guide", "GUIDE")
        k, lost, other = abs(shift), max(g_lost, s_lost), min(g_lost, s_lost)
        also = f" and the {has}'s first {other}" if other else ""
        return (f"the {lacks} starts {k} frames later than the {has}: its first {lost} frames cannot be decoded{also} "
                f"(a clip cut without re-encoding), so frame k of the {lacks} is frame k+{k} of the {has}; drop the "
                f"{has}'s first {k} frames first (e.g. ffmpeg -i {role} -vf \"select=gte(n\\,{k})\" -fps_mode "
                f"passthrough OUT), or write the {lacks} again from a whole source")
    note = ""
    if g_fps and s_fps and abs(g_fps - s_fps) > 0.001 * max(g_fps, s_fps):
        if abs(g / g_fps - s / s_fps) <= 1.5 / min(g_fps, s_fps):
            from fractions import Fraction

            rate = Fraction(g_fps).limit_denominator(1001)  # exact: -r 29.97 is 2997/100, a frame off every 33 s
            return (f"they last as long at different rates ({g_fps:.5g} and {s_fps:.5g} fps), so frame k of one is not "
                    f"frame k of the other: write the style at the guide's rate first (e.g. ffmpeg -i STYLE -r "
                    f"{rate} OUT)")
        note = (f"; their rates differ too ({g_fps:.5g} and {s_fps:.5g} fps): a style resampled from the guide pairs "
                "with it only once written at the guide's rate")
    lost = ""
    if g_lost or s_lost:  # one of them lost frames at its start that the other does not make up for
        lost = (f"; the {'guide' if g_lost else 'style'}'s first {g_lost or s_lost} frames cannot be decoded, so check "
                "that the two start at the same frame")
    return (f"if the two start at the same frame, add --frames 0:{common} (the first {common} frames of each are "
            f"paired, frame k with frame k; a style of a later stretch needs the guide cut to that stretch){note}{lost}")


def pair_lines(guide: dict, style: dict) -> list[str]:
    """What ``flickerless deflicker`` will make of two clips as guide and style: whether their frames and
    sizes agree, and if not, the option that makes them work."""
    rows = [f"as guide and style ({Path(guide['path']).name}, {Path(style['path']).name}):"]
    g, s = guide["frames"], style["frames"]
    if g == s:
        rows.append(f"  frames      match ({g})")
    elif s < g and _keyframes_of(style["path"], g):  # an EbSynth folder: a few frames, named by their numbers
        rows.append(f"  frames      differ ({g} and {s}): {Path(style['path']).name} looks like keyframes named by "
                    f"frame number: give it as --keyframes {style['path']} (or, if it is a style of its own, add "
                    f"--frames 0:{s} to use the frames both have)")
    else:
        rates = [None if d.get("kind") == "images" else d.get("fps") for d in (guide, style)]
        rows.append(f"  frames      differ ({g} and {s}): deflicker refuses them; "
                    f"{count_advice(g, s, *rates, guide.get('lost_at_start', 0), style.get('lost_at_start', 0))}")
    gs, ss = (guide["width"], guide["height"]), (style["width"], style["height"])
    if gs == ss:
        rows.append(f"  size        match ({gs[0]}x{gs[1]})")
    else:
        rows.append(f"  size        differ ({gs[0]}x{gs[1]} and {ss[0]}x{ss[1]}): add --resize (the style to the "
                    "guide's size) or --resize style (work at the style's size)")
    from ..video import _bytes_text, memory_share

    # each is said "held in RAM" against the whole limit above; deflicker shares it between the two it reads
    share = memory_share(clips=2)
    over = [Path(d["path"]).name for d in (guide, style) if d["held_in_ram"] and d["bytes_uncompressed"] > share]
    if over:
        rows.append(f"  working     {' and '.join(over)} over {_bytes_text(share)}, the in-memory limit's share of "
                    "each clip in deflicker: decoded as the work goes, or through a file (--tmp), not held in RAM")
    return rows


def _keyframes_of(path, frames: int) -> bool:
    """Whether a folder's images are named by frame numbers that are not simply 0..n-1 and fall within a
    clip of ``frames`` frames (as keyframes are)."""
    from ..errors import FlickerlessError
    from ..video import keyframe_files

    if not Path(path).is_dir():
        return False
    try:
        keys = sorted(keyframe_files(path, warn=False))  # a guess: a warning about keyframes is for a run
    except FlickerlessError:
        return False
    return keys != list(range(len(keys))) and keys != list(range(1, len(keys) + 1)) and keys[-1] <= frames


def cmd_info(args) -> int:
    described = []
    for clip in args.clips:
        d = describe(clip)
        described.append(d)
        print(json.dumps(d) if args.json else "\n".join(_lines(d)), flush=True)
    if len(described) == 2:  # two clips: most often a guide and its style
        rows = pair_lines(*described)
        if args.json:  # the same as the lines say, for a script (it had no way to learn it)
            g, s = described
            print(json.dumps({"kind": "pair", "guide": g["path"], "style": s["path"],
                              "frames_match": g["frames"] == s["frames"],
                              "size_match": (g["width"], g["height"]) == (s["width"], s["height"]),
                              "advice": [r.strip() for r in rows[1:]]}), flush=True)
        else:
            print("\n".join(rows), flush=True)
    return 0
