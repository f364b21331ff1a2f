import os
import re
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from flickerless import video
from flickerless.cli import main
from flickerless.errors import InputError, OutputError
from flickerless.synthetic import flickering_pair, temporal_error

from .conftest import write_h264, write_hdr


def test_natural_sort_folder(tmp_path):
    from PIL import Image

    for i in (10, 2, 1):
        Image.fromarray(np.full((6, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
    frames, fps = video.read(tmp_path)
    assert [int(f[0, 0, 0]) for f in frames] == [10, 20, 100]


def test_hidden_files_are_not_frames_and_unread_image_types_are_said(tmp_path, clips, caplog):
    """Frames copied from a Mac to a USB or network drive come with ``._0001.png`` beside each file (not
    an image): they were taken as frames (and as a second keyframe 0). A TGA is read; a GIF or EXR among
    the frames is said, not passed over in silence."""
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (1, 2, 3):
        Image.fromarray(np.full((6, 8, 3), i * 10, np.uint8)).save(frames / f"{i:04d}.{'tga' if i == 3 else 'png'}")
        (frames / f"._{i:04d}.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (frames / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    got, _ = video.read(frames)
    assert [int(f[0, 0, 0]) for f in got] == [10, 20, 30]
    assert video.probe(frames).frames == 3
    keys = tmp_path / "keys"
    keys.mkdir()
    style = video.read(clips / "style.mp4")[0]
    Image.fromarray(style[0]).save(keys / "0.png")
    (keys / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    Image.fromarray(style[5]).save(keys / "3.gif")
    assert sorted(video.keyframe_files(keys)) == [0]
    assert "1 file not read as frames (3.gif)" in caplog.text
    out = tmp_path / "o"
    caplog.clear()
    with caplog.at_level("INFO", logger="flickerless"):
        assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "--device", "cpu",
                     *FASTARGS, "-o", str(out)]) == 0
    assert "keyframes mode (1 keyframe)" in caplog.text


def test_a_clip_cut_short_says_which_frames_decode_and_those_can_be_used(tmp_path, capsys):
    """A fast-start MP4 cut in half (a copy that stopped) failed to decode at its partial packet, and the
    frame threads raised it before the frames ahead of it were given out: no frame at all, even with
    --frames. Those frames are now decoded one by one and given out, and the error says how many."""
    import re

    import av

    from flickerless.demo import load_clip, registry_clip

    frames = [video.resize_frame(f, (136, 320)) for f in load_clip(registry_clip("bikes.mp4"), 40)[0]]
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as c:  # the index first: half still opens
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 136, "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    half = tmp_path / "half.mp4"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    try:
        n = len(video.read(half)[0])  # an FFmpeg that conceals the cut-off packet (seen on a 16-core machine)
        failed = False
    except InputError as e:
        assert "cut short or damaged" in str(e)
        n, failed = int(re.search(r"Frames 0-(\d+) decode", str(e)).group(1)) + 1, True
        assert f"-frames:v {n} " in str(e)
    assert 5 < n < 40
    got = list(video.iter_frames(half, 0, n))
    assert len(got) == n and np.array_equal(got[3], next(video.iter_frames(whole, 3, 4)))
    # a run on the frames that decode (and the window's frames after them)
    out = tmp_path / "o.mp4"
    assert main(["deflicker", "--guide", str(half), "--style", str(half), "--frames", f"0:{n - 2}", "--window", "2",
                 *FASTARGS, "-o", str(out)]) == 0
    assert video.probe(out).frames == n - 2
    if failed:
        assert main(["deflicker", "--guide", str(half), "--style", str(half), *FASTARGS, "-o", str(out)]) == 2
        assert "cut short" in capsys.readouterr().err


def test_info_says_a_clip_without_frames_or_cut_short(tmp_path, carphone, capsys):
    """info said a video stream of no frames as "frames 0, size 0x0" (exit 0, and --frames 0:0 for a pair,
    which is refused), and a file cut short as a good clip of the frames it holds, which eval then failed
    on; eval's hint for it gave deflicker's way out (table and window modes)."""
    import json

    import av

    zero = tmp_path / "zero.mkv"
    with av.open(str(zero), "w") as c:  # a video stream, no frame in it; sound
        v = c.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        for i in range(4):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, i * 1024
            c.mux(a.encode(f))
        c.mux(a.encode())
    assert main(["info", str(zero), str(zero)]) == 2
    err = capsys.readouterr().err
    assert "zero.mkv: has no frames (its h264 video stream" in err and "0:0" not in err
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as c:  # the index first: a part still opens
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt, s.options = 176, 144, "yuv420p", {"crf": "0", "g": "4"}
        for f in carphone:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    assert main(["info", str(whole), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cut_short"] is None
    assert main(["info", str(cut), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    said = d["cut_short"]
    assert said["header_frames"] == 12 and said["decode"] < said["in_file"] < 12
    n = said["decode"]
    # the count a command gets: the pair's advice gave the count held, and deflicker with it stopped at frame n
    assert d["frames"] == n and d["duration_s"] == round(n / 30, 3)
    assert main(["info", str(cut)]) == 0
    out = capsys.readouterr().out
    assert f"damaged     cut short: the header says 12 frames and the file holds {said['in_file']}; frames 0-{n - 1} " \
        f"decode, and eval, deflicker and run stop at frame {n}: take those with --frames 0:{n}" in out
    assert main(["info", str(whole), str(cut)]) == 0
    out = capsys.readouterr().out
    assert f"frames      differ (12 and {n})" in out and f"--frames 0:{n} " in out
    assert f"--frames 0:{said['in_file']}" not in out
    assert main(["eval", "--video", str(whole), "--source", str(cut), "--metrics", "pixel_mse", "-q"]) == 2
    err = capsys.readouterr().err
    try:  # FFmpeg 6 (PyAV 18) stops at the cut with an error; FFmpeg 7 (PyAV 19) ends the clip there without one
        video.read(cut)
        stops = False
    except InputError:
        stops = True
    if not stops:  # then the counts are what is said, and the same --max-frames works
        assert f"the video has 12 frames but the source has {n}" in err, err
        assert main(["eval", "--video", str(whole), "--source", str(cut), "--metrics", "pixel_mse", "-q",
                     "--max-frames", str(n)]) == 0
        return
    assert f"Frames 0-{n - 1} decode: eval scores them with --max-frames {n}, or save them" in err
    assert "window" not in err
    # the advice works in one step (--source-frames 0:N stopped again at the video's other count)
    assert main(["eval", "--video", str(whole), "--source", str(cut), "--metrics", "pixel_mse", "-q",
                 "--max-frames", str(n)]) == 0
    capsys.readouterr()
    # a start given is kept
    assert main(["eval", "--video", str(whole), "--source", str(cut), "--metrics", "pixel_mse", "-q",
                 "--frames", "1:", "--source-frames", "1:"]) == 2
    assert f"eval scores those from frame 1 with --max-frames {n - 1}, or save" in capsys.readouterr().err
    assert main(["eval", "--video", str(whole), "--source", str(cut), "--metrics", "pixel_mse", "-q",
                 "--frames", "1:", "--source-frames", "1:", "--max-frames", str(n - 1)]) == 0


def test_a_decoder_short_of_memory_is_not_said_as_a_damaged_file(clips, tmp_path, monkeypatch, capsys):
    """Under ``ulimit -v`` FFmpeg's decoder (and its scaler) could not start its threads (EAGAIN) or
    allocate (ENOMEM) part way through a clip: said as "the file may be cut short or damaged there", sending
    the user to cut a sound clip short. It is said as running out of memory, with what to do; a decoder's
    "invalid data" is still said as damage."""
    import errno

    import av

    real = video._frames

    def failing(error):
        def frames(container, stream, threads=False):
            for i, f in enumerate(real(container, stream, threads)):
                if i == 3:
                    raise error
                yield f
        return frames

    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS, "-o",
            str(tmp_path / "o.mp4")]
    for error in (av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"),
                  av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory")):
        monkeypatch.setattr(video, "_frames", failing(error))
        with pytest.raises(MemoryError, match="guide.mp4: out of memory while decoding it"):
            list(video.iter_frames(clips / "guide.mp4"))
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "out of memory while decoding" in err and "raise this process's memory limit" in err
        assert "damaged" not in err and "Traceback" not in err
    monkeypatch.setattr(video, "_frames", failing(av.error.InvalidDataError(-1094995529, "Invalid data found")))
    with pytest.raises(InputError, match="after frame 2 .*cut short or damaged there"):
        list(video.iter_frames(clips / "guide.mp4"))
    enomem = av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory")
    monkeypatch.setattr(av, "open", lambda *a, **k: (_ for _ in ()).throw(enomem))
    with pytest.raises(MemoryError, match="out of memory while decoding it .FFmpeg could not allocate memory"):
        video.probe(clips / "guide.mp4")


@pytest.mark.parametrize("at", [3, 0])
def test_an_encoder_short_of_memory_is_said_so_and_keeps_the_frames_before(clips, tmp_path, monkeypatch, capsys, at):
    """An encoder that could not allocate or start a thread (ENOMEM, or EAGAIN under ``ulimit -v``) part way
    was said as "writing failed ([Errno 11] ...)", and the frames already encoded were dropped with the
    video. It is said as running out of memory, with what to do, and the frames before are kept for --resume.
    At the first frame, ENOMEM was said as "the h264 encoder cannot write 64x48 frames ...; write PNGs"."""
    import errno

    import av

    real_open = video.VideoWriter._open_video

    class Failing:  # the stream, whose encoder fails at frame `at`
        def __init__(self, stream, error):
            self._s, self._error, self._n = stream, error, 0

        def encode(self, frame=None):
            if frame is not None:
                self._n += 1
                if self._n == at + 1:
                    raise self._error
            return self._s.encode(frame)

        def __getattr__(self, name):
            return getattr(self._s, name)

    out = tmp_path / "o.mp4"
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS,
            "-o", str(out)]
    for error in (av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"),
                  av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory")):
        def open_failing(self, *a, error=error):
            real_open(self, *a)
            self._stream = Failing(self._stream, error)

        monkeypatch.setattr(video.VideoWriter, "_open_video", open_failing)
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"out of memory while encoding frame {at}" in err and "writing failed" not in err, err
        assert "Traceback" not in err and "cannot write" not in err and ("kept in" in err) == (at > 0), err
        partial = video.partial_path(out)
        if at:
            assert len(video.read(partial)[0]) == at
        monkeypatch.undo()
        assert main([*args, "--resume"] if at else args) == 0  # the rest, from the frames kept
        assert len(video.read(out)[0]) == len(video.read(clips / "guide.mp4")[0]) and not partial.exists()
        out.unlink()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc (Linux)")
def test_read_holds_the_clip_once():
    """``video.read`` fills one array as it decodes: its peak RSS grows by the clip's size, not twice
    that (a list of frames, then a stacked copy). Measured in a fresh process: PyAV's frame buffers are
    not seen by tracemalloc, and the peak is read as VmHWM, which, unlike ru_maxrss, does not carry
    this process's peak into the child."""
    import subprocess

    code = (
        "def peak():\n"
        "    s = open('/proc/self/status').read()\n"
        "    return int(s.split('VmHWM:')[1].split()[0]) * 1024\n"
        "from flickerless import video\n"
        "from flickerless.demo import registry_clip\n"
        "p = registry_clip('bikes.mp4')\n"
        "video.probe(p); next(video.iter_frames(p))\n"
        "base = peak()\n"
        "f, fps = video.read(p, max_frames=120)\n"
        "assert f.shape == (120, 272, 640, 3) and fps == video.probe(p).fps, (f.shape, fps)\n"
        "print((peak() - base) / f.nbytes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 1.4  # 2.0 when the frames were listed, then stacked


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc (Linux)")
def test_probe_and_info_do_not_hold_the_file(tmp_path):
    """Probing a clip (its frame count and timing, at every command's start) listed its packets, holding
    the whole file in RAM for a moment: a 2 GB ProRes clip took 2 GB more before a frame was decoded.
    ``info``'s check for a file cut short did the same."""
    import subprocess

    clip = tmp_path / "noise.mkv"  # ~50 MB of packets that do not compress (FFV1 of noise)
    rng = np.random.default_rng(0)
    with video.VideoWriter(clip, 25, codec="ffv1") as w:
        for _ in range(60):
            w.write(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8))
    size = clip.stat().st_size
    assert size > 25e6
    code = (
        "import sys\n"
        "def peak():\n"
        "    s = open('/proc/self/status').read()\n"
        "    return int(s.split('VmHWM:')[1].split()[0]) * 1024\n"
        "from flickerless import video\n"
        "from flickerless.commands.info import _cut_short\n"
        "import av; av.open(sys.argv[1]).close()\n"
        "base = peak()\n"
        "assert video.probe(sys.argv[1]).frames == 60 and _cut_short(sys.argv[1]) is None\n"
        "print(peak() - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(clip)], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 0.25 * size, (int(out.stdout), size)


def test_mp4_round_trip_keeps_fps_and_odd_size(tmp_path, carphone, caplog):
    clip = np.ascontiguousarray(carphone[:5, :71, :95])  # odd height and width
    out = tmp_path / "x.mp4"
    with caplog.at_level("INFO", logger="flickerless"):
        assert video.write(out, clip, fps=12.5) == 5
    assert "95x71 is written as 96x72, the last row and column repeated" in caplog.text
    info = video.probe(out)
    assert (info.frames, info.fps) == (5, 12.5)
    back, _ = video.read(out)
    assert back.shape[1:3] == (72, 96)  # padded by one edge pixel
    assert np.abs(back[:, :71, :95].astype(int) - clip.astype(int)).mean() < 4


@pytest.mark.parametrize("name", ["two.mp4", "two.webm"])
def test_a_frame_two_rows_tall_keeps_its_colour(tmp_path, name):
    """swscale gives a 2-row frame the bottom row's chroma: a red row over a grey one came back grey
    (from 4 rows on it averages them). Their one chroma row is now the two rows' own, as 4:2:0 keeps it."""
    frame = np.empty((2, 64, 3), np.uint8)
    frame[0], frame[1] = (200, 40, 40), (120, 120, 120)
    with video.VideoWriter(tmp_path / name, 25, crf=0) as w:
        w.write(frame)
    back = video.read(tmp_path / name)[0][0].astype(float)
    assert back.shape == (2, 64, 3)
    assert np.abs(back.mean(axis=(0, 1)) - frame.mean(axis=(0, 1))).max() < 2  # red was (87, 87, 87)
    assert back[0, :, 0].mean() - back[0, :, 1].mean() > 60  # the red row is red


@pytest.mark.parametrize("h, w", [(11, 13), (8, 40), (40, 40), (30, 48)])
def test_h265_takes_frames_smaller_than_x265_s_minimum(tmp_path, carphone, caplog, h, w):
    """x265 refuses frames under 16 pixels a side (an FFmpeg traceback from `--codec h265` on a
    thumbnail), and the one in PyAV's wheels aborts the whole process at some widths under 50 (heap
    corruption, found at 40x16 with PyAV 18.1 and 48x16 with 19.0.2): such frames are written padded by their edge pixels to at least 64x16,
    as odd sizes are, and said."""
    clip = np.ascontiguousarray(carphone[:3, 40:40 + h, 50:50 + w])
    out = tmp_path / "x.mkv"
    with caplog.at_level("INFO", logger="flickerless"):
        with video.VideoWriter(out, 25, codec="h265") as wr:
            for f in clip:
                wr.write(f)
    assert f"{w}x{h} is written as {max(w + w % 2, 64)}x{max(h + h % 2, 16)}" in caplog.text
    assert "H.265 is written at least 64x16" in caplog.text
    if (h, w) == (8, 40):
        assert "the last 8 rows and 24 columns repeated" in caplog.text
    back, _ = video.read(out)
    assert back.shape == (3, max(h + h % 2, 16), max(w + w % 2, 64), 3)
    assert np.abs(back[:, :h, :w].astype(int) - clip.astype(int)).mean() < 6


# a test card: six saturated colours and two greys, in blocks of 16 px (H.264's chroma is at half size)
_CARD = np.array([[200, 40, 60], [30, 180, 70], [40, 60, 210], [230, 220, 30],
                  [20, 200, 210], [190, 50, 200], [128, 128, 128], [235, 235, 235]], np.uint8)
_MATRICES = {"709": (0.2126, 0.0722), "601": (0.299, 0.114), "2020": (0.2627, 0.0593)}


def _card(h, w):
    img = np.empty((h, w, 3), np.uint8)
    for x in range(0, w, 16):
        img[:, x:x + 16] = _CARD[(x // 16) % len(_CARD)]
    return img


def _ycbcr(rgb, matrix):
    """Limited-range Y'CbCr of an RGB image through a matrix, worked out here (not by FFmpeg)."""
    kr, kb = _MATRICES[matrix]
    r, g, b = np.moveaxis(rgb.astype(np.float64) / 255, -1, 0)
    y = kr * r + (1 - kr - kb) * g + kb * b
    return 16 + 219 * y, 128 + 224 * (b - y) / (2 * (1 - kb)), 128 + 224 * (r - y) / (2 * (1 - kr))


def _centres(img, w):
    """Each block's middle pixel: away from the edges that chroma subsampling and the codec blur."""
    return np.stack([img[img.shape[0] // 2, x + 8] for x in range(0, w - 15, 16)]).astype(int)


@pytest.mark.parametrize("h, w, matrix, tag", [(720, 1280, "709", 1), (144, 176, "601", 6)])
def test_written_colours_use_and_say_the_matrix_players_assume(h, w, matrix, tag, tmp_path, sound_clip):
    import av

    card = _card(h, w)
    for out, audio in [(tmp_path / "card.mp4", None), (tmp_path / "sound.mkv", sound_clip)]:
        with video.VideoWriter(out, 25, audio=audio) as wr:
            for _ in range(3):
                wr.write(card)
        with av.open(str(out)) as c:
            f = next(c.decode(video=0))
            # said in the stream, kept through the sound's remux
            assert (f.colorspace, f.color_range) == (tag, 1)
            y, u, v = (np.frombuffer(bytes(p), np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                       for p in f.planes)
        # the samples are the card through that matrix (a player reading the tag, or guessing from the
        # size, shows the card's own colours); the other matrix would be far off
        want = _ycbcr(card, matrix)
        got = (y, np.repeat(np.repeat(u, 2, 0), 2, 1), np.repeat(np.repeat(v, 2, 0), 2, 1))
        for g, wnt in zip(got, want):
            assert np.abs(_centres(g[..., None], w) - _centres(wnt[..., None], w)).max() <= 2
        other = _ycbcr(card, "601" if matrix == "709" else "709")
        assert max(np.abs(_centres(g[..., None], w) - _centres(o[..., None], w)).max()
                   for g, o in zip(got, other)) > 10
        back, _ = video.read(out)
        assert np.abs(_centres(back[0], w) - _centres(card, w)).max() <= 3


@pytest.mark.parametrize("h, w, matrix", [(720, 1280, "709"), (576, 720, "601"), (144, 176, "601")])
def test_untagged_clip_is_read_through_the_matrix_players_assume(h, w, matrix, tmp_path):
    """A clip that does not say its matrix (many encoders leave it out) is read as players show it:
    BT.709 from HD up, BT.601 below; FFmpeg's own default would read HD through BT.601."""
    import av

    card = _card(h, w)
    y, u, v = _ycbcr(card, matrix)
    path = tmp_path / "untagged.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(2):
            f = av.VideoFrame(w, h, "yuv420p")
            for plane, values in zip(f.planes, (y, u[::2, ::2], v[::2, ::2])):
                buf = np.zeros((plane.height, plane.line_size), np.uint8)
                buf[:, :plane.width] = np.round(values)
                plane.update(buf)
            for packet in s.encode(f):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).colorspace == 2  # unspecified
    back, _ = video.read(path)
    assert np.abs(_centres(back[0], w) - _centres(card, w)).max() <= 3


def test_disk_frames_random_access(carphone, tmp_path):
    with video.DiskFrames(iter(carphone[:6])) as d:
        assert len(d) == 6 and np.array_equal(d[4], carphone[4]) and np.array_equal(d[-1], carphone[5])
        d.append(carphone[7])  # appended frames read back at once, interleaved with reads
        assert len(d) == 7 and np.array_equal(d[6], carphone[7]) and np.array_equal(d[0], carphone[0])
        with pytest.raises(InputError, match="all frames must have one size"):
            d.append(carphone[8, :10])
    assert not os.path.exists(d.path)
    # a clip whose frames change size is refused while it is read, and leaves no file behind
    with pytest.raises(InputError, match="frame 2 is"):
        video.DiskFrames([carphone[0], carphone[1], carphone[2, :10]], tmpdir=str(tmp_path))
    assert not list(tmp_path.iterdir())
    # floats in [0, 1] (what deflicker returns for float input) are scaled as write scales them; a cast
    # made them black, and wrapped 16-bit values
    with video.DiskFrames(carphone[:2] / 255.0) as d:
        assert np.array_equal(d[1], carphone[1])
    with pytest.raises(InputError, match="frame 0 is uint16"):
        video.DiskFrames(carphone[:2].astype(np.uint16) * 4)


def test_working_files_not_closed_or_left_by_a_killed_run_are_removed(carphone, tmp_path, caplog):
    """An open_frames result dropped without close left a clip's size in the temporary folder, and a run
    killed outright (SIGKILL, the out-of-memory killer) left its spill files and folders for good."""
    import gc
    import subprocess
    import time

    d = video.DiskFrames(iter(carphone[:3]), tmpdir=str(tmp_path))
    f = video.SpillFolder(str(tmp_path))
    Path(f.file("x")).write_bytes(b"x")
    assert len(list(tmp_path.iterdir())) == 2
    del d, f
    gc.collect()
    assert list(tmp_path.iterdir()) == []
    # a process that made its working files and was killed: they stay until a later run sees them
    code = ("import os, signal, sys; from flickerless import video; d = video.DiskFrames(tmpdir=sys.argv[1]); "
            "f = video.SpillFolder(sys.argv[1]); open(f.file('x'), 'w').write('x'); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.startswith("flickerless-") for n in left)
    assert video.stale_spills(tmp_path) == []  # not idle long enough: it could be a run at work
    for p in tmp_path.iterdir():
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    mine = video.DiskFrames(iter(carphone[:1]), tmpdir=str(tmp_path))  # this process's: never taken
    # the user's own, named alike: never taken (a date read as a process id had them removed)
    (tmp_path / "flickerless-2024-results").mkdir()
    (tmp_path / "flickerless-2024-results" / "a.txt").write_text("keep")
    (tmp_path / "flickerless-20240501-notes.txt").write_text("keep")
    (tmp_path / "flickerless-9999999-final.mp4").write_text("keep")
    for p in [Path(mine.path), *tmp_path.glob("flickerless-2*"), *tmp_path.glob("flickerless-9*")]:
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    ours = set(left)
    video.remove_stale_spills(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [Path(mine.path).name, "flickerless-2024-results", "flickerless-20240501-notes.txt", "flickerless-9999999-final.mp4"])
    assert not ours & {p.name for p in tmp_path.iterdir()}
    assert "removed 2 working files of runs that were killed" in caplog.text
    mine.close()
    # a forked child's exit leaves its parent's files (the finalizer was copied into it, and removed them)
    d = video.DiskFrames(iter(carphone[:1]), tmpdir=str(tmp_path))
    pid = os.fork()
    if pid == 0:  # the child drops its copy, as a worker process does when it ends
        import gc as _gc

        del d
        _gc.collect()
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.exists(d.path)
    d.close()


def test_failed_write_leaves_existing_output(tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with video.VideoWriter(out, 10) as w:
            w.write(np.zeros((8, 8, 3), np.uint8))
            raise RuntimeError("interrupted")
    assert out.read_bytes() == b"previous result"
    assert sorted(os.listdir(tmp_path)) == ["o.mp4"]


def test_writer_takes_every_legitimate_crf_and_pixel_aspect(tmp_path):
    """The checks refused what wrote well before: a fractional crf (x264 takes 17.5), crf=None where the
    output has no crf (PNGs, GIF, ffv1), pixel_aspect as text or a Decimal ("10/11"); a numpy float was
    refused in both, said as not a positive number."""
    from decimal import Decimal

    frame = np.zeros((16, 24, 3), np.uint8)
    for name, kw in [("a.mp4", {"crf": 17.5}), ("b.mp4", {"crf": 17.0}), ("c.mp4", {"crf": np.float64(20)}),
                     ("pngs", {"crf": None}), ("d.gif", {"crf": None}), ("e.mkv", {"crf": None, "codec": "ffv1"}),
                     ("f.mp4", {"pixel_aspect": "10/11"}), ("g.mp4", {"pixel_aspect": Decimal("1.5")}),
                     ("h.mp4", {"pixel_aspect": np.float32(1.333)})]:
        with video.VideoWriter(tmp_path / name, 10, **kw) as w:
            w.write(frame)
        assert (tmp_path / name).exists()
    assert video.probe(tmp_path / "f.mp4").pixel_aspect == Fraction(10, 11)
    assert video.probe(tmp_path / "g.mp4").pixel_aspect == Fraction(3, 2)
    assert video.probe(tmp_path / "h.mp4").pixel_aspect == Fraction(1333, 1000)


def test_writer_arguments_are_checked_up_front(tmp_path):
    """times going back or holding NaN failed in PyAV or in a cast, too few ended in a plain ValueError,
    pixel_aspect NaN or text failed in fractions (0 and -1 were taken as 1:1), and crf -5 or 'x' was
    blamed on the frame size (99 accepted): each is now an InputError naming the argument."""
    frame = np.zeros((16, 24, 3), np.uint8)
    for kw, said in [({"times": [0, 0.2, 0.1, 0.3]}, "times must increase .*entry 2 is 0.1 s after 0.2 s"),
                     ({"times": [0, 0.1, 0.1, 0.3]}, "times must increase"),
                     ({"times": [0, float("nan"), 0.2]}, "times must be finite seconds"),
                     ({"times": [0]}, "times must be finite seconds, one for each frame and one more"),
                     ({"times": "x"}, "times must be"),
                     ({"pixel_aspect": float("nan")}, "pixel_aspect must be a positive number"),
                     ({"pixel_aspect": "x"}, "pixel_aspect must be"), ({"pixel_aspect": 0}, "pixel_aspect must be"),
                     ({"pixel_aspect": -1}, "pixel_aspect must be"),
                     ({"pixel_aspect": np.float32("nan")}, r"pixel_aspect must be a positive number .*got nan$"),
                     ({"crf": -5}, "^crf: expected a number 0-51 .*got -5$"), ({"crf": 99}, "crf: expected a number 0-51"),
                     ({"crf": "x"}, "crf: expected an integer 0-51, got 'x'"), ({"crf": 51.5}, "crf: expected a num"),
                     ({"crf": None}, r"crf: o.mp4 \(h264\) is encoded at a crf: give one 0-51")]:
        with pytest.raises(InputError, match=said):
            video.VideoWriter(tmp_path / "o.mp4", 10, **kw)
    assert os.listdir(tmp_path) == []
    with pytest.raises(InputError, match="frame 2 written, but times are given for 2 frames: pass one time for each"):
        with video.VideoWriter(tmp_path / "o.mp4", 10, times=[0, 0.1, 0.25]) as w:
            for _ in range(3):
                w.write(frame)
    assert os.listdir(tmp_path) == []
    with video.VideoWriter(tmp_path / "o.mp4", 10, crf=np.int64(0), pixel_aspect=Fraction(4, 3),
                           times=np.array([0, 0.1, 0.25])) as w:
        w.write(frame)
    assert video.probe(tmp_path / "o.mp4").frames == 1


@pytest.mark.parametrize("name", ["o.mp4", "pngs", "o.gif"])
def test_a_closed_or_aborted_writer_takes_no_more_frames(tmp_path, name, caplog):
    """A write after close reopened a video at the temporary name, and the next close replaced the finished
    output with the later frames; after abort the output appeared all the same; a folder's or a GIF's
    write failed naming the hidden temporary folder. Both now say the writer is done, and the output stays.
    A second close does nothing, as a file's (``close()`` inside ``with`` was an error after a good output);
    keep_partial after abort keeps nothing, without saying a write failed."""
    frames = np.stack([np.full((8, 8, 3), 40 * i, np.uint8) for i in range(3)])
    out = tmp_path / name
    with video.VideoWriter(out, 10) as w:
        w.write(frames[0])
        w.close()
    w.close()
    with pytest.raises(OutputError, match=f"^the writer of {re.escape(str(out))} was closed; open a new VideoWriter$"):
        w.write(frames[1])
    w.abort()  # nothing to drop: the output stays
    assert w.keep_partial() is None
    got = video.read(out)[0]
    assert len(got) == 1 and abs(int(got[0].mean())) <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]

    a = tmp_path / f"a{name}"
    w = video.VideoWriter(a, 10)
    w.write(frames[0])
    w.abort()
    with pytest.raises(OutputError, match="was aborted; open a new VideoWriter$"):
        w.write(frames[1])
    with pytest.raises(OutputError, match="was aborted"):
        w.close()
    with caplog.at_level("WARNING", logger="flickerless"):
        assert w.keep_partial() is None
    assert caplog.text == ""
    assert not a.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("name", ["o.mp4", "pngs", "o.gif"])
def test_an_output_that_cannot_be_put_in_place_is_kept(tmp_path, carphone, monkeypatch, name):
    """The output's folder made read-only (or the disk remounted) during a run: the final rename failed,
    and the finished output was deleted (a folder of PNGs: every frame), or the clean-up's own error was
    said in place of the failure. The finished output (a GIF's frames) is now kept and the error says where."""
    real = os.replace
    out = tmp_path / name

    def refused(src, dst, *a, **k):
        if Path(dst) == out:
            raise PermissionError(1, "Operation not permitted", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(video.os, "replace", refused)
    w = video.VideoWriter(out, 10)
    for f in carphone[:5]:
        w.write(f)
    with pytest.raises(OutputError, match="could not be put in place .*Operation not permitted.*kept in (.*): move") as e:
        w.close()
    kept = Path(re.search(r"kept in (.*): move", str(e.value)).group(1))
    assert not out.exists() and kept.exists() and kept.parent == tmp_path
    assert len(video.read(kept)[0]) == 5


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_get_the_umask_s_permissions_not_the_temporary_name_s(tmp_path, sound_clip, mask):
    """Outputs are written under private temporary names (0600 files, 0700 folders) and renamed into
    place: they must end up as a plainly created file or folder would under the umask, readable by
    others under the usual 022, with sound (a second temporary file), as a GIF, PNGs, or a kept partial."""
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    old = os.umask(mask)
    try:
        for name, kw in [("o.mp4", {}), ("s.mp4", {"audio": sound_clip}), ("o.gif", {}), ("pngs", {})]:
            with video.VideoWriter(tmp_path / name, 25, **kw) as w:
                for f in frames:
                    w.write(f)
        w = video.VideoWriter(tmp_path / "p.mp4", 25)
        w.write(frames[0])
        kept = w.keep_partial()
        g = video.VideoWriter(tmp_path / "p.gif", 25)
        g.write(frames[0])
        kept_gif = g.keep_partial()
    finally:
        os.umask(old)
    for name in ["o.mp4", "s.mp4", "o.gif", kept.name]:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    for folder in [tmp_path / "pngs", kept_gif]:
        assert folder.stat().st_mode & 0o777 == 0o777 & ~mask, folder
        assert (folder / "00000.png").stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(tmp_path / "s.mp4", 0o600)
    old = os.umask(mask)
    try:
        with video.VideoWriter(tmp_path / "s.mp4", 25) as w:  # replacing an output: the new one's mode
            w.write(frames[0])
    finally:
        os.umask(old)
    assert (tmp_path / "s.mp4").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("name", ["o.avi", "o.flv", "o.ts", "o.MTS", "o.m2ts"])
def test_video_formats_not_written_are_refused_not_made_a_folder(tmp_path, name):
    with pytest.raises(OutputError, match="write .mp4, .mov, .mkv, .webm, .gif or a folder of PNGs"):
        video.VideoWriter(tmp_path / name, 25)
    assert os.listdir(tmp_path) == []


def test_background_writer_writes_in_order_and_keeps_what_it_was_given(tmp_path, carphone):
    """Frames (arrays, or callables returning one) are written in the order given, the same as by the
    writer alone; an error of the writing thread reaches the caller, and keep_partial still keeps every
    frame handed on before the failure (the ones queued but not yet written included)."""
    clip = np.ascontiguousarray(carphone[:6])
    with video.BackgroundWriter(video.VideoWriter(tmp_path / "a"), depth=2) as w:
        for i, f in enumerate(clip):
            w.write(f if i % 2 else (lambda f=f: f))
    assert w.count == 6 and np.array_equal(video.read(tmp_path / "a")[0], clip)

    import threading
    import time

    gate = threading.Event()
    w = video.BackgroundWriter(video.VideoWriter(tmp_path / "b"), depth=8)
    w.write(lambda: (gate.wait(), clip[0])[1])  # the thread waits here until all are queued
    for f in clip[1:4]:
        w.write(f)
    w.write(lambda: np.zeros((2, 2), np.uint8))  # not (H, W, 3): the writing thread fails
    gate.set()
    with pytest.raises(ValueError, match="frames must be"):
        for _ in range(1000):  # the next write after the failure raises it
            w.write(clip[5])
            time.sleep(0.01)
    assert w.keep_partial() == tmp_path / "b.partial" and w.count == 4
    assert np.array_equal(video.read(tmp_path / "b.partial")[0], clip[:4]) and not (tmp_path / "b").exists()


def test_host_frame_is_the_rounded_uint8_image(carphone):
    import torch

    img = torch.from_numpy(carphone[0]).permute(2, 0, 1).float().div(255)
    got = video.host_frame(img)
    assert got.flags["C_CONTIGUOUS"] and np.array_equal(got, carphone[0])
    if torch.cuda.is_available():
        pending = video.host_frame(img.cuda())
        assert callable(pending) and np.array_equal(pending(), carphone[0])


def test_host_frame_from_a_thread_on_a_second_gpu(carphone):
    """The command line's several devices hand frames on from threads whose current device is cuda:0:
    the copy and its event must follow the image to its own GPU."""
    import threading

    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    dev = torch.device("cuda", torch.cuda.device_count() - 1)
    img = torch.from_numpy(carphone[0]).permute(2, 0, 1).float().div(255).to(dev)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("frame", video.host_frame(img)))
    t.start()
    t.join()
    assert np.array_equal(got["frame"](), carphone[0])


def test_read_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        video.read(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(InputError, match="cannot read"):
        video.read(bad)
    with pytest.raises(OutputError, match="does not exist"):
        video.VideoWriter(tmp_path / "nope" / "o.mp4")
    with pytest.raises(OutputError, match="bad.mp4 is a file, not a folder"):  # it said the file "does not exist"
        video.VideoWriter(bad / "o.mp4")


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="pipes named through /proc (Linux)")
def test_a_pipe_or_a_device_is_refused_at_once_as_not_a_file(tmp_path, capsys):
    """A clip is opened more than once (probed, then read): a FIFO's second opening waited for a writer
    forever, and `cat clip | flickerless info /dev/stdin` named a /proc/N/fd/pipe:[...] path."""
    r, w = os.pipe()
    os.close(w)
    try:
        assert main(["info", f"/proc/self/fd/{r}"]) == 2
        assert capsys.readouterr().err.strip() == (f"flickerless: error: /proc/self/fd/{r}: is a pipe, not a file; a "
                                                   "clip is read more than once: save it to a file first")
    finally:
        os.close(r)
    with pytest.raises(InputError, match="/dev/null: is a device, not a file"):
        video.probe("/dev/null")
    os.mkfifo(tmp_path / "fifo.mp4")  # (checked last: without the check, this waits for a writer)
    with pytest.raises(InputError, match="fifo.mp4: is a pipe, not a file"):
        video.read(tmp_path / "fifo.mp4")


def test_a_relative_name_with_a_colon_is_read_and_written_as_a_file(tmp_path, sound_clip, monkeypatch, capsys):
    """FFmpeg took what is before a ':' for a protocol: take:1.mp4 (and ./take:1.mp4, which Path makes
    take:1.mp4 again) was "Protocol not found", pipe:0 read stdin."""
    monkeypatch.chdir(tmp_path)
    for name in ("take:1.mp4", "12:30.mp4", "pipe:0"):
        shutil.copy(sound_clip, name)
        assert video.probe(name).frames == 30 and video.has_audio(name)
    assert len(video.read("./take:1.mp4")[0]) == 30
    assert main(["deflicker", "--guide", "take:1.mp4", "--style", "./12:30.mp4", "--frames", "0:3", "-o", "out:1.mp4",
                 *FASTARGS]) == 0
    assert video.probe("out:1.mp4").frames == 3 and video.has_audio("out:1.mp4")
    capsys.readouterr()
    assert main(["info", "pipe:0"]) == 0 and re.search(r"frames +30 ", capsys.readouterr().out)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, carphone):
    from flickerless.synthetic import flickering_pair

    d = tmp_path_factory.mktemp("clips")
    clip = np.ascontiguousarray(carphone[:6, 32:96, 40:120])
    truth, flick = flickering_pair(clip)
    video.write(d / "guide.mp4", clip, 25)
    video.write(d / "style.mp4", flick, 25)
    video.write(d / "short.mp4", flick[:4], 25)
    video.write(d / "small.mp4", flick[:, :32, :40], 25)
    (d / "keys").mkdir()
    (d / "badkeys").mkdir()
    from PIL import Image

    Image.fromarray(truth[0]).save(d / "keys" / "0.png")
    Image.fromarray(truth[5]).save(d / "keys" / "frame_5.png")
    Image.fromarray(truth[0]).save(d / "badkeys" / "first.png")
    (d / "empty").mkdir()
    (d / "notvideo.mp4").write_text("hello")
    np.save(d / "truth.npy", truth)
    return d


@pytest.fixture(scope="module")
def clips_truth(clips):
    return np.load(clips / "truth.npy")


FASTARGS = ["--patch-sizes", "7,5", "--iterations", "2", "-q"]


def test_cli_end_to_end(carphone, tmp_path, capsys):
    """The `clips` crop barely moves, so a plain temporal mean (no motion compensation) clears a low
    bar: this crop pans 4 px a frame, so only frames aligned before blending get near the truth."""
    from flickerless.synthetic import flickering_pair, psnr

    clip = np.ascontiguousarray(np.stack([carphone[t, 32:96, 40 + 4 * t:120 + 4 * t] for t in range(6)]))
    truth, flick = flickering_pair(clip)
    video.write(tmp_path / "guide.mp4", clip, 25)
    video.write(tmp_path / "style.mp4", flick, 25)
    out = tmp_path / "out.mp4"
    rc = main(["deflicker", "--guide", str(tmp_path / "guide.mp4"), "--style", str(tmp_path / "style.mp4"),
               "-o", str(out), "--device", "cpu", *FASTARGS])
    assert rc == 0
    info = video.probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (6, 80, 64, 25.0)
    # the output is deflickered, not the style passed through: closer to the consistent truth. Measured
    # gain: +4.1 dB; blending without PatchMatch's alignment (an identity field) gets +1.2
    result, _ = video.read(out)
    style, _ = video.read(tmp_path / "style.mp4")
    assert psnr(result, truth) > psnr(style, truth) + 3
    # window mode with error-weighted blending reaches the library's option
    out2 = tmp_path / "weighted.mp4"
    assert main(["deflicker", "--guide", str(tmp_path / "guide.mp4"), "--style", str(tmp_path / "style.mp4"),
                 "-o", str(out2), "--device", "cpu", "--mode", "window", "--window", "2", "--error-sigma", "1e-4",
                 *FASTARGS]) == 0
    assert psnr(video.read(out2)[0], style) > psnr(result, style) + 5  # tiny sigma: each frame nearly alone


@pytest.mark.parametrize("name, codec, pix_fmt", [("x.mp4", "h265", "yuv420p"), ("x.webm", None, "yuv420p"),
                                                   ("x.mov", "prores", "yuv422p10le"), ("x.mkv", "ffv1", "bgr0")])
def test_other_codecs_round_trip_in_the_right_colours(name, codec, pix_fmt, tmp_path):
    """H.265, VP9 (a .webm's default), ProRes and lossless FFV1: read back with the card's colours (the
    matrix players assume at the size, said in the stream), at the fps and frame count written; FFV1
    keeps the frames exactly, odd sizes included."""
    import av

    card = np.ascontiguousarray(_card(144, 176)[:, :175])  # an odd width
    out = tmp_path / name
    with video.VideoWriter(out, 12.5, codec=codec) as wr:
        for _ in range(3):
            wr.write(card)
    with av.open(str(out)) as c:
        f = next(c.decode(video=0))
        assert f.format.name == pix_fmt
        if codec == "h265":
            assert c.streams.video[0].codec_tag == "hvc1"  # the tag Apple's players ask of HEVC in mp4
        if pix_fmt != "bgr0":
            assert (f.colorspace, f.color_range) == (6, 1)  # BT.601, limited range, as for H.264 at this size
    back, fps = video.read(out)
    assert (len(back), fps) == (3, 12.5)
    if codec == "ffv1":
        assert back.shape[1:3] == (144, 175) and np.array_equal(back[0], card)
    else:
        assert back.shape[1:3] == (144, 176)  # the odd width padded by one edge column
        assert np.abs(_centres(back[0], 175) - _centres(card, 175)).max() <= 4


@pytest.mark.parametrize("pix_fmt, bits", [("yuv420p", 8), ("yuv420p10le", 10)])
def test_frames_are_read_rounded_not_darker(pix_fmt, bits, tmp_path):
    """A grey ramp stored losslessly (FFV1) at 8 and 10 bits is read back as its exact RGB values,
    rounded: FFmpeg's default conversion truncated, reading 8-bit clips 0.5 levels darker on average
    and 10-bit ones (ProRes, HDR, camera log) 1.6 levels darker."""
    import av

    w, shift = 256, bits - 8
    ys = np.round(np.linspace(16 << shift, 235 << shift, w))
    dtype = np.uint16 if bits > 8 else np.uint8
    path = tmp_path / "ramp.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = w, 16, pix_fmt
        s.codec_context.colorspace, s.codec_context.color_range = 1, 1
        for _ in range(2):
            f = av.VideoFrame(w, 16, pix_fmt)
            f.colorspace, f.color_range = 1, 1
            for i, plane in enumerate(f.planes):
                buf = np.full((plane.height, plane.line_size // np.dtype(dtype).itemsize), 128 << shift, dtype)
                if i == 0:
                    buf[:, :w] = ys
                plane.update(buf.tobytes())
            for packet in s.encode(f):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    got = next(video.iter_frames(path))[8].astype(float)
    want = (ys / (1 << shift) - 16) / 219 * 255
    for ch in range(3):
        assert abs((got[:, ch] - want).mean()) < 0.1 and np.abs(got[:, ch] - want).max() <= 0.55


@pytest.mark.parametrize("h, w, matrix, pix_fmt", [(144, 176, "601", "yuv422p10le"), (720, 1280, "709", "yuv422p10le"),
                                                    (144, 176, "2020", "yuv420p10le")])
def test_10_bit_frames_are_converted_here_through_the_matrix(h, w, matrix, pix_fmt):
    """ProRes's 10-bit 4:2:2 frames (and HDR H.265's 4:2:0) are made here, not by FFmpeg (whose rgb24 ->
    yuv422p10le greyed the first columns at times in PyAV 19.0.2): each plane is the card through the
    matrix, x4 (10 bits), chroma at half width (and, 4:2:0, half height)."""
    card = _card(h, w)
    f = video._yuv10(card, {"601": 6, "709": 1, "2020": 9}[matrix], pix_fmt)
    assert f.format.name == pix_fmt and (f.width, f.height) == (w, h)
    planes = [np.frombuffer(bytes(p), np.uint16).reshape(p.height, -1)[:, : p.width] for p in f.planes]
    y, cb, cr = _ycbcr(card, matrix)
    cols = np.arange(8, w - 15, 16)  # the blocks' middles, away from the edges the chroma filter touches
    assert np.abs(planes[0][h // 2, cols] / 4 - y[h // 2, cols]).max() < 0.2
    ch = h // 2 if pix_fmt == "yuv420p10le" else h
    for plane, want in ((planes[1], cb), (planes[2], cr)):
        assert plane.shape == (ch, w // 2)
        assert np.abs(plane[ch // 2, cols // 2] / 4 - want[h // 2, cols]).max() < 0.2


def test_prores_4444_frames_carry_full_chroma_and_the_alpha():
    card = _card(144, 176)
    rgba = np.dstack([card, np.tile(np.arange(176, dtype=np.uint8), (144, 1))])
    f = video._yuv10(rgba, 1, "yuva444p10le")
    planes = [np.frombuffer(bytes(p), np.uint16).reshape(p.height, -1)[:, : p.width] for p in f.planes]
    y, cb, cr = _ycbcr(card, "709")
    assert [p.shape for p in planes] == [(144, 176)] * 4
    for plane, want in zip(planes[:3], (y, cb, cr)):
        assert np.abs(plane / 4 - want).max() < 0.2  # no chroma filter: every pixel its own
    assert np.array_equal(planes[3], np.rint(np.arange(176) * 1023 / 255).astype(np.uint16)[None].repeat(144, 0))


def _tags(path):
    import av

    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        return f.format.name, (f.color_primaries, f.color_trc, f.colorspace, f.color_range)


@pytest.mark.parametrize("transfer, name", [(18, "HLG"), (16, "PQ (HDR10)")])
def test_hdr_clip_is_said_and_its_colour_description_kept(transfer, name, tmp_path, caplog):
    """Phone footage is often HDR (HLG, BT.2020): its frames are worked on as their code values, and a
    video output says what the source said, so that it plays with the source's colours, not as flat,
    grey SDR; H.265 is then 10-bit (Main 10), as HDR players and sites expect."""
    card = _card(144, 176)
    src = tmp_path / "hdr.mkv"
    write_hdr(src, np.stack([card] * 3), transfer=transfer)
    info = video.probe(src)
    assert info.colour == (9, transfer, 9) and info.alpha is False
    # read through BT.2020's matrix: BT.709's would be far off on the saturated blocks
    assert np.abs(_centres(video.read(src)[0][0], 176) - _centres(card, 176)).max() <= 3
    outs = {"h264": tmp_path / "o.mp4", "h265": tmp_path / "o.mkv", "prores": tmp_path / "o.mov"}
    for codec, out in outs.items():
        caplog.clear()
        with caplog.at_level("WARNING", logger="flickerless"):
            assert main(["deflicker", "--guide", str(src), "--style", str(src), "-o", str(out), "--codec", codec,
                         *FASTARGS]) == 0
        said = [r.getMessage() for r in caplog.records if "HDR" in r.getMessage()]
        assert len(said) == 1 and f"is HDR ({name}, BT.2020)" in said[0] and "--codec h265" in said[0]
        fmt, tags = _tags(out)
        assert tags == (9, transfer, 9, 1), codec
        assert fmt == {"h264": "yuv420p", "h265": "yuv420p10le", "prores": "yuv422p10le"}[codec]
        assert video.probe(out).colour == (9, transfer, 9)
        back = video.read(out)[0]
        assert np.abs(_centres(back[0], 176) - _centres(card, 176)).max() <= 5, codec
    # SDR in, SDR out: described as before, 8-bit H.265
    sdr = tmp_path / "sdr.mp4"
    write_h264(sdr, np.stack([card] * 3))
    assert video.probe(sdr).colour is None
    assert main(["deflicker", "--guide", str(src), "--style", str(sdr), "-o", str(tmp_path / "s.mkv"), "--codec",
                 "h265", *FASTARGS]) == 0
    assert _tags(tmp_path / "s.mkv") == ("yuv420p", (6, 6, 6, 1))


def test_a_style_of_images_takes_the_guide_s_colour_description(tmp_path, caplog):
    """Frames taken from an HDR clip as images (and stylised) are its code values: the output is
    described as the guide is; a PNG folder cannot say so, which is said."""
    card = _card(144, 176)
    src = tmp_path / "hlg.mkv"
    write_hdr(src, np.stack([card] * 3))
    frames = tmp_path / "frames"
    assert main(["deflicker", "--guide", str(src), "--style", str(src), "-o", str(frames), *FASTARGS]) == 0
    assert video.probe(frames).colour is None
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main(["deflicker", "--guide", str(src), "--style", str(frames), "-o", str(tmp_path / "o.mp4"),
                     *FASTARGS]) == 0
    assert _tags(tmp_path / "o.mp4")[1] == (9, 18, 9, 1)
    assert sum("hlg.mkv is HDR (HLG, BT.2020)" in r.getMessage() for r in caplog.records) == 1
    assert "a PNG folder or GIF cannot say so" in caplog.text


def test_generation_says_to_convert_hdr_to_sdr(tmp_path, caplog):
    """A model trained on SDR images sees an HDR clip's code values as flat and grey: `run` says how
    to convert the clip first (its output is not described as HDR)."""
    from flickerless.pipelines.job import read_clip
    from flickerless.pipelines.templates import apply_overrides, load_template

    src = tmp_path / "hlg.mkv"
    write_hdr(src, np.stack([_card(64, 96)] * 2))
    s = apply_overrides(load_template("stylize"), ["video.width=32", "video.height=24"])
    with caplog.at_level("WARNING", logger="flickerless"):
        assert len(read_clip(src, (0, None), s).frames) == 2
    said = [r.getMessage() for r in caplog.records if "HDR" in r.getMessage()]
    assert len(said) == 1 and "convert it to SDR first" in said[0] and "tonemap=" in said[0]


def test_transparency_is_detected_and_said(tmp_path, carphone, caplog):
    """An alpha channel (stylised frames cut out from their background, a ProRes 4444 or PNG-in-MOV
    clip) is read as RGB, without it: said once per clip; an RGBA image that is all opaque has
    nothing to lose and is not."""
    import av
    from PIL import Image

    for name, alpha in (("cut", 120), ("opaque", 255)):
        (tmp_path / name).mkdir()
        for i in range(3):
            a = np.dstack([carphone[i], np.full(carphone.shape[1:3], 255, np.uint8)])
            a[:20, :20, 3] = alpha
            Image.fromarray(a, "RGBA").save(tmp_path / name / f"{i}.png")
    assert video.probe(tmp_path / "cut").alpha and not video.probe(tmp_path / "opaque").alpha
    assert not video.probe(tmp_path / "cut").colour
    clip = tmp_path / "alpha.mov"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("png", rate=25)
        s.width, s.height, s.pix_fmt = 176, 144, "rgba"
        for i in range(3):
            a = np.dstack([carphone[i], np.full(carphone.shape[1:3], 255, np.uint8)])
            a[:, :40, 3] = 0
            for packet in s.encode(av.VideoFrame.from_ndarray(a, format="rgba")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    assert video.probe(clip).alpha
    assert np.array_equal(video.read(clip)[0][1], carphone[1])  # the colours as stored, without the alpha
    # FFmpeg decodes every GIF with an alpha plane: only one that uses it has transparency
    video.write(tmp_path / "opaque.gif", carphone[:3], 10)
    assert not video.probe(tmp_path / "opaque.gif").alpha
    see_through = [Image.fromarray(carphone[i]).convert("P", palette=Image.ADAPTIVE, colors=255) for i in range(2)]
    see_through[0].save(tmp_path / "cut.gif", save_all=True, append_images=see_through[1:], transparency=0, duration=100)
    assert video.probe(tmp_path / "cut.gif").alpha
    # an output that cannot keep it: said once, with those that can
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main(["deflicker", "--guide", str(tmp_path / "opaque"), "--style", str(tmp_path / "cut"), "-o",
                     str(tmp_path / "o.mp4"), *FASTARGS]) == 0
    said = [r.getMessage() for r in caplog.records if "transparency" in r.getMessage()]
    assert len(said) == 1 and "o.mp4 cannot keep the transparency of" in said[0] and "--codec prores" in said[0]
    assert str(tmp_path / "cut") in said[0]


@pytest.mark.parametrize("name, codec, message", [
    ("x.mp4", "prores", "a .mp4 file cannot hold prores; it takes h264, h265 (write prores to .mov or .mkv)"),
    ("x.webm", "h264", "a .webm file cannot hold h264; it takes vp9"),
    ("x.mkv", "mpeg2", "unknown codec 'mpeg2'"),
    ("frames", "ffv1", "a codec (ffv1) is for a video output; a folder of PNGs has none"),
    ("x.gif", "h264", "a GIF has no codec to choose (h264)"),
    ("x.avi", None, "cannot write .avi files; write .mp4, .mov, .mkv, .webm, .gif or a folder of PNGs"),
    ("x.png", None, "x.png: an output is a video (.mp4, .mov, .mkv, .webm, .gif) or a folder of PNG frames (named "
     "00000.png on); for the frames give a folder path without an extension, such as"),
    ("x.JPG", None, "or a folder of PNG frames"),
])
def test_a_codec_the_output_cannot_hold_is_refused(name, codec, message, tmp_path):
    with pytest.raises(OutputError, match=re.escape(message)):
        video.check_output(tmp_path / name, codec)
    with pytest.raises(OutputError, match=re.escape(message)):
        video.VideoWriter(tmp_path / name, codec=codec)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("name, folder", [("out_%05d.png", "out"), ("frame_####.png", "frame"), ("%05d.png", "frames")])
def test_an_ffmpeg_style_frame_pattern_is_told_its_folder(tmp_path, name, folder):
    """-o out_%05d.png was told "such as out_%05d", a folder named with the pattern."""
    with pytest.raises(OutputError) as e:
        video.check_output(tmp_path / name)
    assert str(e.value).endswith(f"such as {tmp_path / folder}")


def test_codec_help_names_each_codec_and_the_outputs_that_take_it():
    text = video.codec_help()
    assert "prores: ProRes 422 HQ, 10-bit, for editing (.mkv/.mov)" in text
    assert "vp9: VP9, for the web (.mkv/.webm)" in text and "ffv1: " in text and text.count("(.") == 5


def test_a_codec_this_ffmpeg_lacks_is_said_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(video.VIDEO_CODECS, "h265", ("libnotthere", "yuv420p", "missing"))
    with pytest.raises(OutputError, match="has no libnotthere encoder for h265; choose another codec"):
        video.check_output(tmp_path / "x.mp4", "h265")


def test_adding_the_sound_keeps_what_the_video_was_written_with(sound_clip, tmp_path):
    """The sound is added by copying the written video once more, and that copy lost what the first
    write had right: HEVC's hvc1 tag (Apple's players refuse hev1), ProRes 4444's tag (read as 422 HQ),
    VP9's alpha flag (played opaque), the pixel shape of a ProRes .mov."""
    import av
    from fractions import Fraction

    frames = video.read(sound_clip)[0][:6]
    rgba = np.concatenate([frames, np.full((*frames.shape[:3], 1), 128, np.uint8)], axis=3)
    cases = [("h.mp4", "h265", frames, {}), ("p.mov", "prores", rgba, {"alpha": True}),
             ("v.webm", None, rgba, {"alpha": True}), ("s.mov", "prores", frames, {"pixel_aspect": Fraction(16, 11)})]
    for name, codec, fs, kw in cases:
        with video.VideoWriter(tmp_path / name, 25, audio=sound_clip, codec=codec, **kw) as wr:
            for f in fs:
                wr.write(f)
        with av.open(str(tmp_path / name)) as c:
            assert c.streams.audio, name
            s = c.streams.video[0]
            tag, mode, sar = s.codec_context.codec_tag, s.metadata.get("alpha_mode"), s.sample_aspect_ratio
        assert {"h.mp4": tag == "hvc1", "p.mov": tag == "ap4h", "v.webm": mode == "1",
                "s.mov": sar == Fraction(16, 11)}[name], (name, tag, mode, sar)
    assert video.probe(tmp_path / "v.webm").alpha
    # a long name (its hidden temporary fits): the sound's copy was named after that, overran the limit,
    # and every frame was lost at the end
    long = tmp_path / ("x" * 235 + ".mp4")
    with video.VideoWriter(long, 25, audio=sound_clip) as wr:
        for f in frames:
            wr.write(f)
    assert len(video.read(long)[0]) == len(frames) and video.has_audio(long)


def test_webm_output_keeps_the_sound_as_opus(sound_clip, tmp_path):
    """WebM holds Opus or Vorbis: the clip's AAC sound is re-encoded as Opus, as long as the frames."""
    import av

    frames, _ = video.read(sound_clip)
    out = tmp_path / "o.webm"
    with video.VideoWriter(out, 25, audio=sound_clip) as wr:
        for f in frames:
            wr.write(f)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        a = c.streams.audio[0]
        assert a.codec_context.name == "opus"
        last = max(float(p.pts * p.time_base) for p in c.demux(a) if p.pts is not None)
    assert abs(last - len(frames) / 25) < 0.1


def test_cli_lossless_ffv1_output_is_the_png_frames(clips, tmp_path):
    """``--codec ffv1`` (lossless RGB) writes exactly the frames a PNG folder gets, sound and timing
    of a video included."""
    base = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS]
    assert main(base + ["-o", str(tmp_path / "png")]) == 0
    assert main(base + ["-o", str(tmp_path / "o.mkv"), "--codec", "ffv1"]) == 0
    a, b = video.read(tmp_path / "png")[0], video.read(tmp_path / "o.mkv")[0]
    assert a.shape == b.shape and np.array_equal(a, b)
    assert video.probe(tmp_path / "o.mkv").fps == 25.0


def test_cli_refuses_a_codec_the_container_cannot_hold_before_any_work(clips, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(video, "probe", lambda *a: pytest.fail("the clips were read"))
    rc = main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "-o",
               str(tmp_path / "o.mp4"), "--codec", "prores", "-q"])
    assert rc == 2
    assert "a .mp4 file cannot hold prores" in capsys.readouterr().err


def test_cli_one_frame_clip(clips, tmp_path, capsys, caplog):
    """A clip of one frame has nothing to blend with: the frame comes out as it went in, with no
    progress bar left at 0 and a log line in the singular."""
    from PIL import Image

    style, _ = video.read(clips / "style.mp4")
    guide, _ = video.read(clips / "guide.mp4")
    for name, img in (("g", guide[0]), ("s", style[0])):
        (tmp_path / name).mkdir()
        Image.fromarray(img).save(tmp_path / name / "0.png")
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="flickerless"):
        assert main(["deflicker", "--guide", str(tmp_path / "g"), "--style", str(tmp_path / "s"), "-o", str(out),
                     "--device", "cpu", *FASTARGS[:-1]]) == 0  # not -q: the bar would show
    back, _ = video.read(out)
    assert back.shape[0] == 1 and np.array_equal(back[0], style[0])
    assert "pair" not in capsys.readouterr().err
    assert ": 1 frame 80x64" in caplog.text


def test_cli_crf_sets_the_video_quality(clips, tmp_path):
    """``--crf``: x264's constant rate factor of a video output; 0 is lossless, higher is smaller."""
    sizes = {}
    for crf in ("0", "45"):
        out = tmp_path / f"crf{crf}.mp4"
        assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"),
                     "-o", str(out), "--device", "cpu", "-q", "--crf", crf, *FASTARGS]) == 0
        sizes[crf] = out.stat().st_size
        assert video.probe(out).frames == 6
    assert sizes["45"] * 3 < sizes["0"]


def test_cli_no_detail_returns_the_library_blend_without_restoration(clips, tmp_path):
    from flickerless import deflicker

    out = tmp_path / "plain"
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"),
                 "-o", str(out), "--device", "cpu", "--no-detail", *FASTARGS]) == 0
    guide, _ = video.read(clips / "guide.mp4")
    style, _ = video.read(clips / "style.mp4")
    kw = dict(device="cpu", patch_sizes=(7, 5), iterations=2)
    plain = deflicker(guide, style, detail=False, **kw)
    assert np.abs(video.read(out)[0].astype(int) - plain.astype(int)).max() <= 1
    assert np.abs(deflicker(guide, style, **kw).astype(int) - plain.astype(int)).max() > 1  # the default restores


def test_cli_keyframes_to_png_folder(clips, clips_truth, tmp_path):
    out = tmp_path / "frames"
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(clips / "keys"),
                 "-o", str(out), *FASTARGS]) == 0
    assert sorted(p.name for p in out.iterdir()) == [video.OUTPUT_MARK] + [f"{i:05d}.png" for i in range(6)]
    frames, _ = video.read(out)
    assert np.array_equal(frames[0], clips_truth[0]) and np.array_equal(frames[5], clips_truth[5])


def test_keyframes_are_matched_to_the_frames_they_are_named_after(clips, clips_truth, tmp_path, capsys):
    """Frames FFmpeg writes are numbered from 0001: a keyframe 0004.png stylises the guide's 0004.png,
    the fourth frame (index 3), as in EbSynth. A video guide counts from 0, or from --keyframe-start."""
    from PIL import Image

    frames, _ = video.read(clips / "guide.mp4")
    folder = tmp_path / "guide"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + 1:04d}.png")
    keys = tmp_path / "keys"
    keys.mkdir()
    for i in (0, 3):
        Image.fromarray(clips_truth[i]).save(keys / f"{i + 1:04d}.png")
    assert video.keyframe_positions([1, 4], folder) == {1: 0, 4: 3}
    assert video.keyframe_positions([1, 4], clips / "guide.mp4") == {1: 1, 4: 4}
    assert video.keyframe_positions([1, 4], clips / "guide.mp4", start=1) == {1: 0, 4: 3}
    out = tmp_path / "o"
    assert main(["deflicker", "--guide", str(folder), "--keyframes", str(keys), "-o", str(out), *FASTARGS]) == 0
    got, _ = video.read(out)
    assert np.array_equal(got[0], clips_truth[0]) and np.array_equal(got[3], clips_truth[3])
    # the same keyframes against the video: numbered from 1 by --keyframe-start 1, the same frames
    out2 = tmp_path / "o2"
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "--keyframe-start", "1",
                 "-o", str(out2), *FASTARGS]) == 0
    got2, _ = video.read(out2)
    assert np.array_equal(got2[0], clips_truth[0]) and np.array_equal(got2[3], clips_truth[3])
    # a number the guide folder does not have, a number before the first frame, two files of one number
    (keys / "0000.png").write_bytes((keys / "0001.png").read_bytes())
    capsys.readouterr()
    assert main(["deflicker", "--guide", str(folder), "--keyframes", str(keys), "-o", str(tmp_path / "x"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "keyframe 0: the guide folder" in err and "numbered 1 to 6" in err and err.count("\n") == 1
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "--keyframe-start", "1",
                 "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "keyframe 0 is before the guide's first frame (numbered 1)" in capsys.readouterr().err
    # keyframes numbered from 1 against a video, the last one past its end: the way out is said
    (keys / "0000.png").unlink()
    (keys / "0006.png").write_bytes((keys / "0001.png").read_bytes())
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys),
                 "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "keyframe 6 is past the guide's last frame (5); if the keyframes are numbered from 1 (as FFmpeg " \
           "numbers frames), add --keyframe-start 1" in capsys.readouterr().err
    (keys / "0006.png").unlink()
    (keys / "key_4.png").write_bytes((keys / "0004.png").read_bytes())
    assert main(["deflicker", "--guide", str(folder), "--keyframes", str(keys), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "0004.png and key_4.png are both keyframe 4" in capsys.readouterr().err
    assert main(["deflicker", "--guide", str(folder), "--style", str(folder), "--keyframe-start", "1",
                 "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "--keyframe-start numbers keyframes" in capsys.readouterr().err
    # --window has no part in keyframes mode (it was ignored), a negative first number, and the numbered-
    # from-1 hint only where --keyframe-start 1 would place every keyframe
    (keys / "key_4.png").unlink()
    for extra, said in ((["--window", "3"], "--window: keyframes mode renders each frame from the keyframes"),
                        (["--keyframe-start", "-3"], "--keyframe-start -3: the number of the guide's first frame")):
        assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), *extra,
                     "-o", str(tmp_path / "x"), "-q"]) == 2
        assert said in capsys.readouterr().err
    (keys / "0100.png").write_bytes((keys / "0001.png").read_bytes())
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "-o", str(tmp_path / "x"),
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "keyframe 100 is past the guide's last frame" in err and "--keyframe-start" not in err
    (keys / "0100.png").unlink()
    # a keyframe cut short (a JPEG's header is whole): said before any work, not when its turn came with
    # frames kept that a --resume could not take once it was mended
    Image.fromarray(clips_truth[5]).save(keys / "0006.jpg", quality=95)
    data = (keys / "0006.jpg").read_bytes()
    (keys / "0006.jpg").write_bytes(data[: len(data) // 2])
    assert video.image_size(keys / "0006.jpg") == clips_truth[5].shape[:2]  # the header alone reads
    assert main(["deflicker", "--guide", str(folder), "--keyframes", str(keys), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "0006.jpg: cannot read as an image" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not video.partial_path(tmp_path / "x").exists()
    (keys / "0006.jpg").unlink()
    # an image without a number in the guide folder (sorted last) moved every keyframe one frame late
    # without a word: the numbered frames keep their numbers, and the stray image is said
    Image.fromarray(frames[0]).save(folder / "poster.png")
    video._said_numbering.clear()
    assert video.keyframe_positions([1, 4], folder) == {1: 0, 4: 3}
    out3 = tmp_path / "o3"
    assert main(["deflicker", "--guide", str(folder), "--keyframes", str(keys), "-o", str(out3), *FASTARGS]) == 0
    got3, _ = video.read(out3)
    assert np.array_equal(got3[0], clips_truth[0]) and np.array_equal(got3[3], clips_truth[3])
    assert "poster.png has no frame number among numbered frames" in capsys.readouterr().err
    # two guide frames of one number: which one a keyframe names is not clear, and by position it is neither
    (folder / "poster.png").unlink()
    Image.fromarray(frames[1]).save(folder / "frame_2.png")
    with pytest.raises(InputError, match=r"two frames numbered 2 \(0002.png, frame_2.png\).*--keyframe-start"):
        video.keyframe_positions([1, 4], folder)


def test_keyframes_against_frames_named_with_a_suffix_after_their_number(clips, clips_truth, tmp_path, caplog):
    """ComfyUI saves frames as ComfyUI_00001_.png, a fixed "_" after the number: keyframes named as the
    frames they stylise were refused, and renamed 00005.png they landed a frame late without a word (the
    guide's names were taken as unnumbered, so matched by position from 0). The frame counter is the digit
    run that varies between names of one template, whatever text follows it, and the matching is said."""
    from PIL import Image

    frames, _ = video.read(clips / "guide.mp4")
    folder = tmp_path / "guide"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"ComfyUI_{i + 1:05d}_.png")
    keys, renamed = tmp_path / "keys", tmp_path / "renamed"
    keys.mkdir()
    renamed.mkdir()
    for i in (1, 4):
        Image.fromarray(clips_truth[i]).save(keys / f"ComfyUI_{i + 1:05d}_.png")
        Image.fromarray(clips_truth[i]).save(renamed / f"{i + 1:05d}.png")
    for k in (keys, renamed):
        with caplog.at_level("INFO", logger="flickerless"):
            assert video.keyframe_positions(video.keyframe_files(k, folder), folder) == {2: 1, 5: 4}
    assert "by the number in their names: 2 -> ComfyUI_00002_.png (index 1), 5 -> ComfyUI_00005_.png" in caplog.text
    out = tmp_path / "o"
    assert main(["deflicker", "--guide", str(folder), "--keyframes", str(renamed), "-o", str(out), *FASTARGS]) == 0
    got, _ = video.read(out)
    assert np.array_equal(got[1], clips_truth[1]) and np.array_equal(got[4], clips_truth[4])
    # a fixed number in the template (shot2) is not the frame's: the run that varies is, for the guide's
    # frames and for a keyframe named as they are
    shot = tmp_path / "shot"
    shot.mkdir()
    for i in range(3):
        Image.fromarray(frames[i]).save(shot / f"shot2_{i + 1:04d}.png")
    (keys / "ComfyUI_00005_.png").unlink()
    (keys / "ComfyUI_00002_.png").rename(keys / "shot2_0002.png")
    assert video.keyframe_positions(video.keyframe_files(keys, shot), shot) == {2: 1}
    # names without numbers: by position, said as a warning (it may be a frame off)
    for i, p in enumerate(sorted(shot.iterdir())):
        p.rename(shot / f"{'abc'[i]}.png")
    caplog.clear()
    assert video.keyframe_positions([2], shot) == {2: 2}
    assert any(r.levelname == "WARNING" and "by position" in r.getMessage() and "2 -> c.png (index 2)"
               in r.getMessage() for r in caplog.records)


def test_a_keyframe_saved_as_a_copy_or_a_version_is_not_read_as_that_number(clips, tmp_path, caplog):
    """macOS Finder names a duplicate "0020 copy 2.png", and versions are saved as "5_v2.png": such a
    keyframe was read as frame 2 and placed there, with an info line at most. A name of several numbers
    that no other name of its template explains is refused, naming it; a name of another template than
    the other keyframes' is warned about."""
    from PIL import Image

    keys = tmp_path / "keys"
    keys.mkdir()
    img = Image.fromarray(np.zeros((6, 8, 3), np.uint8))
    img.save(keys / "0002.png")
    for name in ("0005 copy 2.png", "5_v2.png"):
        img.save(keys / name)
        with pytest.raises(InputError, match=f"keyframe {name} holds several numbers"):
            video.keyframe_files(keys, clips / "guide.mp4")
        (keys / name).unlink()
    # a suffix all the keyframes share: the number that varies is the frame's, the fixed one is not
    (keys / "0002.png").rename(keys / "0002_v2.png")
    img.save(keys / "0005_v2.png")
    assert sorted(video.keyframe_files(keys)) == [2, 5]
    # one name unlike the others: read by its only number, said loudly
    img.save(keys / "final_v4.png")
    with caplog.at_level("INFO", logger="flickerless"):
        assert sorted(video.keyframe_files(keys)) == [2, 4, 5]
    assert [r.levelname for r in caplog.records if "read by the number in the name: final_v4.png as keyframe 4" in r.getMessage()
            ] == ["WARNING"]
    # one name alone whose last number is zero-padded or the longest is read by it, as names ending in their
    # number were before (shot2_0012.png was refused, and a dated name was told to call itself 2024.png)
    for name, k in (("shot2_0012.png", 12), ("2024-05-01_0012.png", 12)):
        alone = tmp_path / name.split(".")[0]
        alone.mkdir()
        img.save(alone / name)
        assert list(video.keyframe_files(alone)) == [k]


def test_messages_about_frames_name_a_folders_files(carphone, tmp_path, caplog):
    """Frames were said by their index from 0 where the user's files count from 1: "frames 5-9 hold no
    keyframe" sent a user to frame_00005.png, in the shot before, and the warning came back. Where the
    clip is a folder of images, the files are named beside the index."""
    from PIL import Image

    clip = np.concatenate([carphone[:5, 40:104, 48:128], 255 - carphone[5:10, :64, 96:176]])  # a cut at 5
    guide, keys = tmp_path / "guide", tmp_path / "keys"
    guide.mkdir()
    keys.mkdir()
    for i, f in enumerate(clip):
        Image.fromarray(f).save(guide / f"frame_{i + 1:05d}.png")
    Image.fromarray(255 - clip[1]).save(keys / "frame_00002.png")
    args = ["deflicker", "--guide", str(guide), "--keyframes", str(keys), "--device", "cpu", *FASTARGS]
    for extra in ([], ["--frames", "2:10"]):  # the whole clip finds its cuts in run_deflicker, a range in the cli
        caplog.clear()
        with caplog.at_level("INFO", logger="flickerless"):
            assert main([*args, *extra, "-o", str(tmp_path / f"o{len(extra)}")]) == 0
        said = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("scene cuts at frames [5 (frame_00006.png)]") for m in said), said
        assert any(m.startswith("frames 5-9 (frame_00006.png-frame_00010.png), a shot of their own, hold no keyframe")
                   for m in said), said
    assert video.frames_said(guide, 5, 9) == "5-9 (frame_00006.png-frame_00010.png)"
    assert video.frames_said(guide, 5) == "5 (frame_00006.png)" and video.frames_said(None, 5, 9) == "5-9"


def test_keyframes_are_loaded_when_needed_a_few_at_a_time(clips, clips_truth, tmp_path, monkeypatch):
    """Hundreds of keyframes (every other frame of a long clip) must not all sit in memory: the command
    line checks them from their headers, and the run loads each when it is needed, keeping a few."""
    from PIL import Image

    from flickerless.cli import _Keyframes

    keys = tmp_path / "keys"
    keys.mkdir()
    for i in (0, 2, 4, 5):
        Image.fromarray(clips_truth[i]).save(keys / f"{i}.png")
    kf = _Keyframes({i: keys / f"{i}.png" for i in (0, 2, 4, 5)}, (32, 40), keep=2)
    assert 4 in kf and 3 not in kf and len(kf) == 4 and kf.loads == 0  # asking is not loading
    first = kf[4]
    assert first.shape == (3, 32, 40) and first.dtype == torch.float32 and kf[4] is first and kf.loads == 1
    for i in (0, 2, 5, 4):
        kf[i]
    assert kf.loads == 5 and len(kf._cache) == 2  # 4 was dropped and loaded again
    loaded = []
    real = video.load_image
    monkeypatch.setattr(video, "load_image", lambda p, **kw: loaded.append(p) or real(p, **kw))
    out = tmp_path / "o"
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "-o", str(out),
                 *FASTARGS]) == 0
    monkeypatch.setattr(video, "load_image", real)
    got, _ = video.read(out)
    assert all(np.array_equal(got[i], clips_truth[i]) for i in (0, 2, 4, 5))
    # each keyframe read once, when first needed (frames 1 and 3 use two each: without the kept few, 8)
    assert sorted(loaded) == sorted(keys.iterdir())


def test_cli_resize(clips, tmp_path):
    out = tmp_path / "r.mp4"
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "small.mp4"),
                 "--resize", "-o", str(out), *FASTARGS]) == 0
    assert video.probe(out).width == 80


def test_cli_resize_style_works_at_the_styles_size(clips, clips_truth, tmp_path):
    """--resize style: the guide is brought to the style's (or the keyframes') size, and the output
    comes out at that size, shown as wide as the guide."""
    from fractions import Fraction

    from PIL import Image

    from flickerless import deflicker

    out = tmp_path / "small"
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "small.mp4"),
                 "--resize", "style", "-o", str(out), *FASTARGS]) == 0
    got, _ = video.read(out)
    assert got.shape == (6, 32, 40, 3)
    guide = np.stack([video.resize_frame(f, (32, 40)) for f in video.read(clips / "guide.mp4")[0]])
    want = deflicker(guide, video.read(clips / "small.mp4")[0], device="cpu", patch_sizes=(7, 5), iterations=2)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # a style of another shape (80x32 for an 80x64 guide): its pixels are shown twice as high
    squashed = tmp_path / "squashed.mp4"
    video.write(squashed, np.stack([video.resize_frame(f, (32, 80)) for f in video.read(clips / "style.mp4")[0]]), 25)
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(squashed), "--resize", "style",
                 "-o", str(tmp_path / "sq.mp4"), *FASTARGS]) == 0
    info = video.probe(tmp_path / "sq.mp4")
    assert (info.width, info.height, info.pixel_aspect) == (80, 32, Fraction(1, 2))
    # keyframes of their own size: the output is at theirs, and reproduces them at their frames
    keys = tmp_path / "keys"
    keys.mkdir()
    small = {i: video.resize_frame(clips_truth[i], (32, 40)) for i in (0, 5)}
    for i, img in small.items():
        Image.fromarray(img).save(keys / f"{i}.png")
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "--resize", "style",
                 "-o", str(tmp_path / "k"), *FASTARGS]) == 0
    got, _ = video.read(tmp_path / "k")
    assert got.shape == (6, 32, 40, 3) and np.array_equal(got[0], small[0]) and np.array_equal(got[5], small[5])
    Image.fromarray(clips_truth[3]).save(keys / "3.png")  # one keyframe of another size
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "--resize", "style",
                 "-o", str(tmp_path / "k2"), "-q"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--guide", "{d}/missing.mp4", "--style", "{d}/style.mp4"], "no such file"),
        (["--guide", "{d}/notvideo.mp4", "--style", "{d}/style.mp4"], "cannot read"),
        (["--guide", "{d}/empty", "--style", "{d}/style.mp4"], "no images"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/short.mp4"], "6 frames but style"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/small.mp4"], "--resize"),
        (["--guide", "{d}/guide.mp4", "--keyframes", "{d}/badkeys"], "frame number"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--device", "cuda:7"], "cuda"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--patch-sizes", "4"], "--patch-sizes must be odd"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--patch-sizes", "1001"], "at most 63"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--seed", "99999999999999999999"], "-2**63 to 2**63 - 1"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--error-sigma", "-1"], "> 0"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--crf", "60"], "0-51"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--fps", "0"], "above 0"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--fps", "x"], "frames per second"),
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--fps", "1e400"], "frames per second"),  # a traceback
        (["--guide", "{d}/guide.mp4", "--style", "{d}/style.mp4", "--keyframes", "{d}/keys"], "not both"),
        (["--guide", "{d}/guide.mp4", "--keyframes", "{d}/keys", "--mode", "window"],
         "--mode window blends a --style video; --keyframes DIR goes with --mode keyframes"),
        (["--guide", "{d}/guide.mp4"], "--style is required"),
    ],
)
def test_cli_bad_input_one_line_exit_2(clips, tmp_path, capsys, args, message):
    out = tmp_path / "o.mp4"
    rc = main(["deflicker", *[a.format(d=clips) for a in args], "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert not out.exists()


def test_spill_folder_avoids_a_tmp_held_in_memory(tmp_path, monkeypatch, caplog):
    """Frames spilled to a tmpfs /tmp (Fedora, Arch) would fill RAM all the same: they go beside the
    output instead, unless --tmp or $FLICKERLESS_TMPDIR says where."""
    import tempfile

    monkeypatch.delenv("FLICKERLESS_TMPDIR", raising=False)
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    real = video._filesystem
    monkeypatch.setattr(video, "_filesystem", lambda p: "ext4")
    assert video.spill_dir(out) == tempfile.gettempdir()
    monkeypatch.setattr(video, "_filesystem",
                        lambda p: "tmpfs" if os.path.realpath(p) == os.path.realpath(tempfile.gettempdir()) else "ext4")
    with caplog.at_level("INFO", logger="flickerless"):
        assert video.spill_dir(out) == str(out.parent.resolve())
    assert "held in memory" in caplog.text
    assert video.spill_dir(out, chosen=str(tmp_path)) == str(tmp_path)
    monkeypatch.setenv("FLICKERLESS_TMPDIR", str(tmp_path))
    assert video.spill_dir(out) == str(tmp_path)
    with pytest.raises(InputError, match="FLICKERLESS_TMPDIR .*not a writable folder"):
        monkeypatch.setenv("FLICKERLESS_TMPDIR", str(tmp_path / "nope"))
        video.spill_dir(out)
    monkeypatch.setattr(video, "_filesystem", real)
    assert real("/proc") == "proc" and real("/") is not None  # read from /proc/mounts


def test_cli_refuses_a_run_the_spill_disk_cannot_hold(clips, tmp_path, monkeypatch, capsys, caplog):
    import shutil

    spill = tmp_path / "spill"
    spill.mkdir()
    base = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--tmp", str(spill), *FASTARGS]
    frame = 64 * 80 * 3
    monkeypatch.setattr(video, "MEMORY_LIMIT", 0)  # every clip goes through files (streamed: all 6 frames held)
    usage = shutil.disk_usage(spill)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=2 * 6 * frame - 1))
    assert main([*base, "-o", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert "reading the guide and the style through disk needs about 180 KiB" in err and str(spill) in err
    assert "which has 180 KiB free" in err and "0.0 GiB" not in err  # a size said in a unit that shows it
    assert "--tmp DIR" in err and err.strip().count("\n") == 0 and not (tmp_path / "a.mp4").exists()
    # room for the clips but perhaps not for the table's entries (kept in RAM up to a budget): said, and
    # the run goes on, its entries spilled to the same folder
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=2 * 6 * frame + 1))
    monkeypatch.setattr(sys.modules["flickerless.blend.deflicker"], "HOST_BUDGET", 0)
    import tempfile

    made, mkdtemp = [], tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(k.get("dir")) or mkdtemp(*a, **k))
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main([*base, "-o", str(tmp_path / "b.mp4")]) == 0
    assert "this run needs about" in caplog.text and "may run out of room" in caplog.text
    assert str(spill) in made  # the table's entries went there
    assert list(spill.iterdir()) == []  # and nothing is left behind


def test_ranges_done_at_once_share_the_in_memory_limit(tmp_path):
    """Several devices: each range may hold its share of the 1 GiB in-memory limit, not all of it, so
    eight GPUs on a long 1080p take do not read eight ranges of two clips whole (16 GB) but stream. The
    guide and the style share it too: two clips just under the limit each were both held (3.07 GB peak
    RSS, where 1.22 streamed)."""
    import flickerless.cli as cli

    args = cli.build_parser().parse_args(["deflicker", "--guide", "g.mp4", "--style", "s.mp4", "-o",
                                          str(tmp_path / "o.mp4")])
    job = {"mode": "table", "size": (1080, 1920), "keyframes": {}}
    frame = 1080 * 1920 * 3
    assert cli._memory_share(job) == video.MEMORY_LIMIT // 2  # the guide's and the style's halves
    assert not cli._streams(args, job, 0, 80)  # 0.50 GB a clip: both fit the limit
    assert cli._streams(args, job, 0, video.MEMORY_LIMIT // frame)  # each under the limit, both over it
    assert cli._memory_share({**job, "mode": "keyframes"}) == video.MEMORY_LIMIT  # the guide alone
    job["parts"] = 2
    frames = 65  # 0.40 GB a clip: two clips under the limit, two ranges of two over it
    assert not cli._streams(args, {**job, "parts": 1}, 0, frames)
    assert cli._memory_share(job) == video.MEMORY_LIMIT // 4 and cli._streams(args, job, 0, frames)
    # and a streamed range's segments are sized from its share
    assert cli._stream_plan(args, job, 0, 1000)[0] == cli._stream_plan(args, {**job, "parts": 1}, 0, 1000)[0] // 2


def _spy_on_streams(monkeypatch) -> list:
    """The StreamingFrames made from now on, in a list."""
    made = []
    real = video.StreamingFrames.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        made.append(self)

    monkeypatch.setattr(video.StreamingFrames, "__init__", spy)
    return made


def test_cli_streams_a_long_clip_with_the_same_frames(clips, carphone, tmp_path, monkeypatch):
    """A stretch too large for RAM in table mode is decoded as the segments move forward (cuts from
    thumbnails read first), holding a stretch of each clip: the frames are those of the whole-clip path.
    --stream / --no-stream override the choice."""
    from flickerless.synthetic import flickering_pair

    # 144 frames, back and forth, with cuts at frames 30 and 90
    order = np.r_[0:12, 11:-1:-1, 0:12, 11:-1:-1, 0:12, 11:-1:-1, 0:12, 11:-1:-1, 0:12, 11:-1:-1, 0:12, 11:-1:-1]
    frames = np.ascontiguousarray(carphone[order, 16:80, 16:96])
    frames[30:90] = frames[30:90, ::-1]
    _, flick = flickering_pair(frames)
    video.write(tmp_path / "g.mp4", frames, 25)
    video.write(tmp_path / "s.mp4", flick, 25)
    spill = tmp_path / "spill"
    spill.mkdir()
    base = ["deflicker", "--guide", str(tmp_path / "g.mp4"), "--style", str(tmp_path / "s.mp4"), "--device", "cpu",
            "--window", "2", "--tmp", str(spill), *FASTARGS]
    frame = 64 * 80 * 3
    made = _spy_on_streams(monkeypatch)
    assert main([*base, "-o", str(tmp_path / "whole")]) == 0
    assert made == []  # the clips fit in RAM: read whole
    # the clips (2 x 144 frames) are over the in-memory limit: they stream, by default
    monkeypatch.setattr(video, "MEMORY_LIMIT", 10 * frame)
    assert main([*base, "-o", str(tmp_path / "streamed")]) == 0
    assert len(made) == 2  # the guide and the style
    for r in made:
        assert r.decoded == 144  # each frame decoded once
        # a stretch went to files, not the whole clip: a segment, the one decoded ahead, the window
        assert 0 < r.peak_disk_bytes <= 72 * frame
    whole, _ = video.read(tmp_path / "whole")
    streamed, _ = video.read(tmp_path / "streamed")
    assert np.array_equal(whole, streamed)
    assert list(spill.iterdir()) == []
    made.clear()
    assert main([*base, "--no-stream", "-o", str(tmp_path / "asked_whole")]) == 0  # read whole into files
    assert made == []
    monkeypatch.undo()
    made = _spy_on_streams(monkeypatch)
    assert main([*base, "--stream", "-o", str(tmp_path / "asked_stream")]) == 0  # streamed though it fits
    assert len(made) == 2
    for name in ("asked_whole", "asked_stream"):
        assert np.array_equal(video.read(tmp_path / name)[0], whole)


def test_cli_streams_window_mode_with_the_same_frames(carphone, tmp_path, monkeypatch):
    """Window mode reads the clip in order too: streamed, it drops what it has passed, and gives the frames
    of the whole-clip path."""
    from flickerless.synthetic import flickering_pair

    frames = np.ascontiguousarray(np.concatenate([carphone, carphone[::-1], carphone, carphone[::-1]])[:, 16:80, 16:96])
    _, flick = flickering_pair(frames)
    video.write(tmp_path / "g.mp4", frames, 25)
    video.write(tmp_path / "s.mp4", flick, 25)
    base = ["deflicker", "--guide", str(tmp_path / "g.mp4"), "--style", str(tmp_path / "s.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", "--no-cuts", "--tmp", str(tmp_path), *FASTARGS]
    made = _spy_on_streams(monkeypatch)
    assert main([*base, "-o", str(tmp_path / "whole")]) == 0 and made == []
    monkeypatch.setattr(video, "MEMORY_LIMIT", 4 * 64 * 80 * 3)
    monkeypatch.setattr(video.StreamingFrames, "CHUNK", 4)
    assert main([*base, "-o", str(tmp_path / "streamed")]) == 0 and len(made) == 2
    for r in made:
        assert r.decoded == 48  # each frame decoded once
        # a stretch of the clip at a time (the targets at work, a window each side, two chunks ahead)
        assert 0 < r.peak_disk_bytes < 36 * 64 * 80 * 3
    assert np.array_equal(video.read(tmp_path / "whole")[0], video.read(tmp_path / "streamed")[0])


def test_cli_streams_keyframes_mode_with_the_same_frames(carphone, tmp_path, monkeypatch):
    """Keyframes mode reads the guide in order, each frame with the keyframes around it: streamed, it
    holds the guide from the keyframe before its targets on, and gives the frames of the whole-clip path."""
    from PIL import Image

    from flickerless.synthetic import flickering_pair

    frames = np.ascontiguousarray(np.concatenate([carphone, carphone[::-1], carphone, carphone[::-1]])[:, 16:80, 16:96])
    _, flick = flickering_pair(frames)
    video.write(tmp_path / "g.mp4", frames, 25)
    keys = tmp_path / "keys"
    keys.mkdir()
    for k in (0, 8, 16, 24, 32, 40, 47):
        Image.fromarray(flick[k]).save(keys / f"{k}.png")
    base = ["deflicker", "--guide", str(tmp_path / "g.mp4"), "--mode", "keyframes", "--keyframes", str(keys),
            "--device", "cpu", "--no-cuts", "--tmp", str(tmp_path), *FASTARGS]
    made = _spy_on_streams(monkeypatch)
    monkeypatch.setattr(video, "MEMORY_LIMIT", 4 * 64 * 80 * 3)
    monkeypatch.setattr(video.StreamingFrames, "CHUNK", 4)
    assert main([*base, "--no-stream", "-o", str(tmp_path / "whole")]) == 0 and made == []
    assert main([*base, "-o", str(tmp_path / "streamed")]) == 0 and len(made) == 1  # the guide alone
    assert made[0].decoded == 48  # each frame decoded once
    assert 0 < made[0].peak_disk_bytes < 36 * 64 * 80 * 3  # a stretch of the clip at a time
    assert np.array_equal(video.read(tmp_path / "whole")[0], video.read(tmp_path / "streamed")[0])


def test_cli_stream_needs_a_finite_window(clips, tmp_path, capsys):
    for extra in (["--window", "inf"], ["--mode", "window", "--window", "inf"]):
        rc = main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device",
                   "cpu", "-o", str(tmp_path / "o.mp4"), "--stream", *extra, *FASTARGS])
        err = capsys.readouterr().err
        assert rc == 2 and "--stream needs a finite --window (or keyframes mode)" in err
        assert "Traceback" not in err and not (tmp_path / "o.mp4").exists()


def test_cli_window_0_is_refused(clips, tmp_path, capsys):
    """``--window 0`` wrote the style as it was, exit 0, said as "table mode" as if it had blended."""
    for cmd in (["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "-o",
                 str(tmp_path / "o.mp4")], ["demo", "--out", str(tmp_path / "demo")]):
        assert main([*cmd, "--window", "0", "-q"]) == 2
        err = capsys.readouterr().err
        assert "--window: 0 blends each frame with no other" in err and err.count("\n") <= 2, err
        assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "demo").exists()


def test_streaming_frames_reads_in_order_and_again_after_release(tmp_path, carphone):
    video.write(tmp_path / "c.mp4", carphone, 25)
    ref, _ = video.read(tmp_path / "c.mp4")
    with video.StreamingFrames(tmp_path / "c.mp4", 10, start=2, memory_limit=0, tmpdir=str(tmp_path)) as r:
        r.CHUNK = 4
        assert len(r) == 10 and np.array_equal(r[5], ref[7]) and np.array_equal(r[-1], ref[11])
        assert r.decoded == 10 and r.peak_disk_bytes == 10 * ref[0].nbytes
        r.release_before(8)  # chunks 0 and 1 (frames 0-7) go
        assert r.disk_bytes == 2 * ref[0].nbytes
        assert np.array_equal(r[1], ref[3]) and r.decoded == 14  # decoded again
        with pytest.raises(IndexError):
            r[10]
    assert not list(tmp_path.glob("flickerless-frames-*"))
    with pytest.raises(InputError, match="ended after 12 frames, though it says it has 14"):
        video.StreamingFrames(tmp_path / "c.mp4", 12, start=2)[11]


def _until_decoded(r, count, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while r.decoded < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # and it stops there
    return r.decoded


def test_streaming_frames_decodes_ahead_in_a_thread(tmp_path, carphone, monkeypatch):
    """A reader ``ahead`` frames ahead decodes, in its thread, the chunks that start before the furthest
    frame asked for plus ``ahead``, and no more; ``prefetch`` starts it before anything is asked for."""
    video.write(tmp_path / "c.mp4", np.concatenate([carphone, carphone[::-1]])[:20], 25)
    ref, _ = video.read(tmp_path / "c.mp4")
    with video.StreamingFrames(tmp_path / "c.mp4", 20, memory_limit=0, tmpdir=str(tmp_path), ahead=6) as r:
        r.CHUNK = 4
        r.prefetch()  # frames 0-5 wanted: chunks 0 and 1
        assert _until_decoded(r, 8) == 8
        assert np.array_equal(r[5], ref[5])  # chunk 1 wanted to its end (8) + 6: chunks 2 and 3 too
        assert _until_decoded(r, 16) == 16
        r.release_before(12)
        assert r.disk_bytes == 4 * ref[0].nbytes and np.array_equal(r[13], ref[13])
        assert np.array_equal(r[19], ref[19]) and _until_decoded(r, 20) == 20
        assert np.array_equal(r[2], ref[2]) and r.decoded == 24  # released, so decoded again (beside the thread)
    assert not list(tmp_path.glob("flickerless-frames-*"))
    with pytest.raises(ValueError, match="after the reader was closed"):  # not a wait for a thread that is gone
        r[0]
    # a chunk holds at most 16 frames and 64 MiB (the decoding thread holds the one it fills): 10 at 1080p, 2 at 4K
    from PIL import Image

    (tmp_path / "big").mkdir()
    Image.new("RGB", (1920, 1080)).save(tmp_path / "big" / "0.png")
    write_h264(tmp_path / "c.mkv", carphone[:4])  # Matroska says no frame count: probe would decode it all
    assert video.probe(tmp_path / "c.mkv").frames == 4
    monkeypatch.setattr(video, "iter_frames", None)  # sizing the chunks decodes nothing
    for path, size, frames in [("c.mp4", None, 16), ("c.mkv", None, 16), ("c.mp4", (1080, 1920), 10),
                               ("c.mp4", (2160, 3840), 2), ("c.mp4", (4320, 7680), 1), ("big", None, 10)]:
        with video.StreamingFrames(tmp_path / path, 10, resize=size) as r:
            assert r.CHUNK == frames


def test_streaming_frames_raises_what_its_thread_met(tmp_path, carphone, monkeypatch):
    """A failure in the decoding thread (a full disk here) is raised by the read that waits for it, and
    closing still cleans up."""
    import errno

    video.write(tmp_path / "c.mp4", carphone[:12], 25)

    def full(self, c, arr):
        raise OSError(errno.ENOSPC, "No space left on device")

    r = video.StreamingFrames(tmp_path / "c.mp4", 12, memory_limit=0, tmpdir=str(tmp_path), ahead=4)
    monkeypatch.setattr(video.StreamingFrames, "_keep", full)
    with pytest.raises(OSError, match="No space left"):
        r[0]
    r.close()
    assert r._thread is None and not list(tmp_path.glob("flickerless-frames-*"))


@pytest.mark.parametrize("window, writer", [("inf", "DiskFrames.append"), ("15", "StreamingFrames._keep")])
def test_cli_disk_full_mid_run_is_one_line(clips, tmp_path, monkeypatch, capsys, window, writer):
    import errno

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    # clips read through files: all at once (window inf), or as they stream (table mode's default then)
    monkeypatch.setattr(video, "MEMORY_LIMIT", 0)
    cls, name = writer.split(".")
    monkeypatch.setattr(getattr(video, cls), name, full)
    rc = main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
               "-o", str(tmp_path / "o.mp4"), "--tmp", str(tmp_path), "--window", window, *FASTARGS])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "--tmp DIR" in err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob("flickerless-frames-*"))


def test_an_output_disk_that_fills_up_keeps_the_frames_done(clips, tmp_path, monkeypatch, capsys):
    """The output's disk full at frame 5 of a PNG folder: the 4 frames done are kept (renames, which a full
    disk does not stop) and say so; the frame cut off is not one of them. They were deleted before
    keeping them was tried, and an earlier run's kept frames with them. A resumed run stopped while it
    copies the earlier run's frames keeps those as they were (it kept the fewer it had copied)."""
    import errno

    from PIL import Image

    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", *FASTARGS, "-o", str(tmp_path / "o")]
    assert main([*args[:-1], str(tmp_path / "whole")]) == 0
    save, calls = Image.Image.save, [0]

    def filling(self, fp, *a, **k):
        calls[0] += 1
        if calls[0] == 5 and str(fp).endswith(".png"):
            Path(fp).write_bytes(b"\x89PNG half")  # what a full disk leaves of it
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", filling)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "frames 0-3 of" in err
    kept = tmp_path / "o.partial"
    assert len(video.read(kept)[0]) == 4
    # resumed, and stopped while it copies the 4 kept frames: they stay, all 4
    calls[0] = 0
    monkeypatch.setattr(Image.Image, "save", save)
    real = video.VideoWriter.write
    copied = [0]

    def stopping(self, frame):
        copied[0] += 1
        if copied[0] == 3:
            raise KeyboardInterrupt
        return real(self, frame)

    monkeypatch.setattr(video.VideoWriter, "write", stopping)
    assert main([*args, "--resume"]) == 130
    assert "frames 0-3 of" in capsys.readouterr().err and len(video.read(kept)[0]) == 4
    monkeypatch.setattr(video.VideoWriter, "write", real)
    assert main([*args, "--resume"]) == 0
    assert np.array_equal(video.read(tmp_path / "o")[0], video.read(tmp_path / "whole")[0])
    assert not kept.exists()


def test_a_folder_swap_that_fails_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    """publish_folder moved the earlier output (a kept partial, say) aside, then lost it when moving the
    new one in failed."""
    import errno

    old, new = tmp_path / "o", tmp_path / ".o-new"
    video.write(old, np.zeros((2, 4, 4, 3), np.uint8))
    new.mkdir()
    replace, calls = os.replace, [0]

    def failing_second(a, b):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.EXDEV, "cross-device link")
        return replace(a, b)

    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(OSError):
        video.publish_folder(new, old)
    monkeypatch.undo()
    assert len(video.read(old)[0]) == 2 and not list(tmp_path.glob(".o.old.*"))


@pytest.mark.skipif(not hasattr(__import__("signal"), "raise_signal"), reason="signals")
def test_a_second_ctrl_c_does_not_interrupt_the_keeping_of_the_frames():
    """Two Ctrl-C a moment apart: the second interrupted the keeping of the frames, which were lost."""
    import signal

    from flickerless.cli import _stop_signals_as_interrupts

    before = signal.getsignal(signal.SIGINT)
    with _stop_signals_as_interrupts():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        try:
            signal.raise_signal(signal.SIGINT)  # ignored while the frames are kept
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pytest.fail("a second stop interrupted the keeping of the frames")
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("given", ["29.97", "30000/1001"])
def test_fps_takes_ntsc_rates_as_they_are_meant(clips, tmp_path, given):
    """--fps 29.97 was written as 2997/100 (a frame's drift every 33 s against 30000/1001 footage), and
    30000/1001 was refused."""
    import av

    out = tmp_path / "o.mp4"
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device",
                 "cpu", "--mode", "window", "--window", "1", *FASTARGS, "--frames", "0:3", "--fps", given, "-o",
                 str(out), "-q"]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)


def test_the_rate_of_a_guide_of_images_is_said(clips, tmp_path, caplog):
    """A folder guide has no rate: a video output was written at 30 fps without a word, a video style's
    own 24 fps passed over."""
    video.write(tmp_path / "g", video.read(clips / "guide.mp4")[0])
    video.write(tmp_path / "s24.mp4", video.read(clips / "style.mp4")[0], 24)
    args = ["deflicker", "--guide", str(tmp_path / "g"), "--style", str(tmp_path / "s24.mp4"), *FASTARGS]
    with caplog.at_level("INFO", logger="flickerless"):
        assert main([*args, "-o", str(tmp_path / "o.mp4")]) == 0
    assert (f"the guide is a folder of images, which has no frame rate: {tmp_path / 'o.mp4'} is written at 30 fps "
            "(the style's 24 fps is not used); --fps sets it") in caplog.text
    assert video.probe(tmp_path / "o.mp4").fps == 30
    caplog.clear()
    with caplog.at_level("INFO", logger="flickerless"):
        assert main([*args, "-o", str(tmp_path / "o24.mp4"), "--fps", "24"]) == 0
        assert main([*args, "-o", str(tmp_path / "frames")]) == 0  # a PNG folder has no rate
    assert "which has no frame rate" not in caplog.text


def test_keyframes_of_another_size_are_offered_only_what_works(clips, tmp_path, capsys):
    """Keyframes of several sizes were offered --resize style, then refused for having several sizes."""
    from PIL import Image

    truth = np.load(clips / "truth.npy")
    for sizes, offered in (([(40, 32)], True), ([(40, 32), (48, 36)], False)):
        keys = tmp_path / f"keys{len(sizes)}"
        keys.mkdir()
        for k, size in zip((0, 5), sizes * 2):
            Image.fromarray(truth[k]).resize(size).save(keys / f"{k}.png")
        assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "-o",
                     str(tmp_path / "o.mp4"), "--device", "cpu", *FASTARGS]) == 2
        err = capsys.readouterr().err
        assert "pass --resize to resize keyframes to the guide" in err and ("--resize style" in err) == offered


def test_a_misspelt_option_is_said_by_its_command_with_the_nearest(capsys):
    """argparse said leftover arguments as the top command's ("see flickerless --help", whose help lists
    no subcommand's options); each is said by the command it was given to, with the nearest option."""
    assert main(["deflicker", "--guide", "g.mp4", "--stlye", "s.mp4", "-o", "o.mp4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flickerless deflicker: error: unrecognized arguments: --stlye s.mp4 (did you mean --style?)")
    assert err.rstrip().endswith("(see flickerless deflicker --help)")
    assert main(["info", "a.mp4", "--jsno"]) == 2
    assert "flickerless info: error: unrecognized arguments: --jsno (did you mean --json?)" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
    assert "flickerless: error: unrecognized arguments: --bogus (see flickerless --help)" in capsys.readouterr().err
    # an option of the command given before it: put after it, not "did you mean --quiet?" of --quiet itself
    assert main(["--quiet", "deflicker", "--guide", "g.mp4", "--style", "s.mp4", "-o", "o.mp4"]) == 2
    assert "flickerless deflicker: error: --quiet goes after the command: flickerless deflicker --quiet ..." in \
        capsys.readouterr().err


def test_cli_unwritable_output(clips, tmp_path, capsys):
    rc = main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"),
               "-o", str(tmp_path / "no" / "such" / "o.mp4"), "-q"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


_DISPLAY_MATRICES = {-90: (0, 1, -1, 0), 90: (0, -1, 1, 0), 180: (-1, 0, 0, -1),  # a, b, c, d of the display matrix
                     "hflip": (-1, 0, 0, 1), "vflip": (1, 0, 0, -1), "transpose": (0, 1, 1, 0), "transverse": (0, -1, -1, 0)}


def _rotate_mp4(src, dst, rotation) -> None:
    """Copy an mp4 with its track's display matrix set, as a phone writes portrait video (rotation as
    FFmpeg reports it: -90 is how an upright phone's footage is stored), or a mirror (an editor's flip)."""
    import struct

    data = bytearray(src.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0  # version 0 track header: the matrix is 40 bytes into its body
    a, b, c, d = (v << 16 for v in _DISPLAY_MATRICES[rotation])
    data[at + 44 : at + 80] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("rotation, shown", [
    (-90, lambda f: np.rot90(f, -1, axes=(1, 2))),  # a quarter turn clockwise
    (90, lambda f: np.rot90(f, 1, axes=(1, 2))),
    (180, lambda f: f[:, ::-1, ::-1]),
    # mirrors, as FFmpeg's autorotation shows them: the rotation alone read a left-right mirror as half a turn
    # and missed a top-bottom one
    ("hflip", lambda f: f[:, :, ::-1]),
    ("vflip", lambda f: f[:, ::-1]),
    ("transpose", lambda f: f.transpose(0, 2, 1, 3)),
    ("transverse", lambda f: f.transpose(0, 2, 1, 3)[:, ::-1, ::-1]),
])
def test_rotated_video_is_read_upright(tmp_path, carphone, rotation, shown):
    plain = tmp_path / "plain.mp4"
    video.write(plain, carphone[:3], 10)
    rotated = tmp_path / "rotated.mp4"
    _rotate_mp4(plain, rotated, rotation)
    stored, _ = video.read(plain)
    upright, _ = video.read(rotated)
    assert np.array_equal(upright, shown(stored))
    info = video.probe(rotated)
    assert (info.frames, info.height, info.width) == (3, *upright.shape[1:3])


def _aspect_of(path):
    import av

    with av.open(str(path)) as c:
        return c.streams.video[0].sample_aspect_ratio


def test_anamorphic_guide_gives_an_output_shown_as_wide(clips, tmp_path, sound_clip):
    from fractions import Fraction

    guide, _ = video.read(clips / "guide.mp4")
    wide = tmp_path / "wide.mp4"
    write_h264(wide, guide, sample_aspect_ratio=Fraction(64, 45))
    assert video.probe(wide).pixel_aspect == Fraction(64, 45)
    assert video.probe(clips / "guide.mp4").pixel_aspect == 1
    # turned a quarter (a phone's portrait clip), a pixel is as much taller as it was wider
    turned = tmp_path / "turned.mp4"
    _rotate_mp4(wide, turned, -90)
    assert video.probe(turned).pixel_aspect == Fraction(45, 64)
    out = tmp_path / "o.mp4"
    assert main(["deflicker", "--guide", str(wide), "--style", str(clips / "style.mp4"), "-o", str(out), "-q",
                 "--quality", "draft"]) == 0
    assert _aspect_of(out) == Fraction(64, 45)
    # a square-pixel guide says nothing; the sound's remux keeps what was said
    assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"),
                 "-o", str(tmp_path / "square.mp4"), "-q", "--quality", "draft"]) == 0
    assert _aspect_of(tmp_path / "square.mp4") in (None, 0, 1)
    with video.VideoWriter(tmp_path / "sound.mp4", 25, audio=sound_clip, pixel_aspect=Fraction(4, 3)) as w:
        w.write(guide[0])
    assert _aspect_of(tmp_path / "sound.mp4") == Fraction(4, 3) and _sound(tmp_path / "sound.mp4") is not None


def test_interlaced_guide_is_said_with_the_way_out(clips, tmp_path, caplog):
    """1080i camcorder footage weaves two fields into each frame: the run goes on, and says once how
    to make it progressive."""
    frames, _ = video.read(clips / "guide.mp4")
    woven = tmp_path / "woven.mp4"
    write_h264(woven, frames, options={"x264-params": "interlaced=1:tff=1"})
    assert video.probe(woven).interlaced and not video.probe(clips / "guide.mp4").interlaced
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main(["deflicker", "--guide", str(woven), "--style", str(clips / "style.mp4"), "-o",
                     str(tmp_path / "o.mp4"), *FASTARGS]) == 0
    said = [r.getMessage() for r in caplog.records if "interlaced" in r.getMessage()]
    assert len(said) == 1 and str(woven) in said[0] and "-vf bwdif" in said[0]


def _frames_named(d: Path, stems) -> Path:
    """A folder of tiny PNG frames named ``stems``, each a grey of its own."""
    from PIL import Image

    d.mkdir()
    for i, stem in enumerate(stems):
        Image.fromarray(np.full((4, 6, 3), i * 20, np.uint8)).save(d / f"{stem}.png")
    return d


def test_a_gap_in_a_numbered_frame_folder_is_said(tmp_path, caplog):
    """A style folder 00000..00009.png with 00005.png gone was read as 9 frames, each after the gap paired
    with the guide frame before its own; `deflicker --frames 0:9` (the hint for unequal counts) then ran
    without a word. Two files with one number were read in the order the folder listed them."""
    def folder(name, stems):
        return _frames_named(tmp_path / name, stems)

    with caplog.at_level("WARNING", logger="flickerless"):
        video.probe(folder("gap", [f"{i:05d}" for i in range(10) if i != 5]))
        video.probe(folder("keys", ["0", "10", "20", "30"]))  # keyframes: numbered so on purpose
        twice = folder("twice", ["frame_1", "frame_001", "frame_2", "frame_3"])
        video.probe(twice)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert "gap: frame number 5 is missing: frames are read in order" in said[0]
    assert "frame_001.png and frame_1.png carry one frame number" in said[1]
    # read in the names' order, whatever order the folder lists them in
    assert [p.name for p in video._image_files(twice)][:2] == ["frame_001.png", "frame_1.png"]


def test_a_gap_in_a_folder_numbered_with_text_after_the_number_is_said(tmp_path, caplog):
    """ComfyUI saves ComfyUI_00001_.png: a number with text after it was taken for no number, so such a
    folder with a frame gone, doubled or a stray image in it said nothing (and frame_0001_v2.png ... read
    all as number 2, said to carry one number). The frame counter is read as keyframes' is."""
    def folder(name, stems):
        return _frames_named(tmp_path / name, stems)

    with caplog.at_level("WARNING", logger="flickerless"):
        video.probe(folder("comfy", [f"ComfyUI_{i:05d}_" for i in range(1, 11) if i != 5]))
        video.probe(folder("twice", [f"frame_{i}_final" for i in ("1", "001", "2", "3")]))
        video.probe(folder("poster", [f"ComfyUI_{i:05d}_" for i in range(1, 6)] + ["poster"]))
        video.probe(folder("versions", [f"frame_{i:04d}_v2" for i in range(1, 6)]))  # a fixed number: no gap
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    assert "comfy: frame number 5 is missing: frames are read in order" in said[0]
    assert "frame_001_final.png and frame_1_final.png carry one frame number" in said[1]
    assert "poster.png has no frame number among numbered frames" in said[2]


def test_image_folders_exif_16_bit_and_mixed_sizes(tmp_path, carphone, capsys):
    from PIL import Image

    frame = carphone[0]
    # 16-bit grey PNG: scaled to 8 bits, not clipped to white
    grey = tmp_path / "grey16"
    grey.mkdir()
    Image.fromarray(frame[..., 1].astype(np.uint16) * 257).save(grey / "0.png")
    back, _ = video.read(grey)
    assert np.array_equal(back[0], np.repeat(frame[..., 1:2], 3, axis=2))
    # 32-bit float grey TIFF in [0, 1] (compositing tools): scaled, not truncated to black
    floats = tmp_path / "float"
    floats.mkdir()
    Image.fromarray(frame[..., 1].astype(np.float32) / 255, "F").save(floats / "0.tif")
    back, _ = video.read(floats)
    assert np.abs(back[0].astype(int) - np.repeat(frame[..., 1:2], 3, axis=2)).max() <= 1
    # the scale is the type's, not each frame's: a 16-bit fade's dark frames (all values <= 255) were read
    # as 8-bit values, as bright as the rest; a float frame with a highlight at 1.01 was read as 0-255, black
    fade = tmp_path / "fade16"
    fade.mkdir()
    for i, level in enumerate((0.002, 0.5)):
        Image.fromarray(np.rint(frame[..., 1] * 257.0 * level).astype(np.uint16)).save(fade / f"{i}.png")
    back, _ = video.read(fade)
    assert back[0].max() <= 1 and abs(back[1].mean() - frame[..., 1].mean() / 2) < 1
    lit = frame[..., 1].astype(np.float32) / 255
    lit[0, 0] = 1.01
    Image.fromarray(lit, "F").save(floats / "1.tif")
    back, _ = video.read(floats)
    assert np.abs(back[1].astype(int) - back[0]).max() <= 255 - frame[0, 0, 1] + 1 and back[1][0, 0, 0] == 255
    # a photo stored sideways with an EXIF orientation: read as shown
    photo = tmp_path / "photo"
    photo.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    Image.fromarray(frame).save(photo / "0.png", exif=exif)
    assert np.array_equal(video.read(photo)[0][0], np.rot90(frame, -1))
    # one frame of another size: the file is named, in the library and the CLI
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(4):
        img = carphone[i] if i != 2 else carphone[i][:, :170]
        Image.fromarray(np.ascontiguousarray(img)).save(mixed / f"{i}.png")
    with pytest.raises(InputError, match="2.png: is 170x144 but 0.png is 176x144"):
        video.read(mixed)
    guide = tmp_path / "g.mp4"
    video.write(guide, carphone[:4], 10)
    rc = main(["deflicker", "--guide", str(guide), "--style", str(mixed), "-o", str(tmp_path / "o.mp4"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "2.png" in err and "Traceback" not in err


def test_an_output_name_near_the_limit_is_written_and_the_run_succeeds(clips, tmp_path, caplog):
    """A valid name of 244 bytes was written in full, then the run failed (exit 2) on the 13 bytes longer
    name of the record a stopped run keeps: "File name too long: ...partial.mp4.json"."""
    out = tmp_path / ("é" * 120 + ".mp4")
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS]
    assert main([*args, "-o", str(out)]) == 0
    assert video.probe(out).frames == 6 and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    assert "the name is too long to keep the frames beside it" in caplog.text
    assert main([*args, "-o", str(out), "--resume"]) == 2


@pytest.mark.parametrize("ext", [".mp4", ".gif", ""])
def test_a_valid_long_output_name_fits_its_temporary_names(clips, tmp_path, capsys, ext):
    """A valid name of 246-255 bytes was refused ("cannot write there (File name too long)") for its hidden
    temporary name ``.NAME.XXXXXXXX.mp4``: that name is cut to fit, and still found when a killed run left
    it. One past the limit is said in words before any work."""
    import time

    out = tmp_path / ("b" * (250 - len(ext)) + ext)
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS]
    assert main([*args, "-o", str(out)]) == 0
    assert video.probe(out).frames == 6 and [p.name for p in tmp_path.iterdir()] == [out.name]
    assert main([*args, "-o", str(out)]) == 0  # an earlier output replaced (a folder: swapped through .NAME.old.*)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    w = video.VideoWriter(out)
    w.write(video.read(clips / "guide.mp4")[0][0])
    assert len(os.fsencode(w.tmp.name)) <= 255 and w.tmp.name.startswith(".bbb")
    old = time.time() - 3600
    for p in [w.tmp, *(w.tmp.iterdir() if w.tmp.is_dir() else ())]:
        os.utime(p, (old, old))
    assert video.stale_outputs(out) == [w.tmp]
    w.abort()
    video.write_whole(tmp_path / ("j" * 250), "{}")
    assert (tmp_path / ("j" * 250)).read_text() == "{}"
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / ("b" * 256 + ext))]) == 2
    assert "more than its file system takes (255); give a shorter name" in capsys.readouterr().err


def test_cli_refuses_to_write_over_its_input(clips, tmp_path, capsys):
    guide = tmp_path / "guide.mp4"
    guide.write_bytes((clips / "guide.mp4").read_bytes())
    before = guide.read_bytes()
    for args in (["--guide", str(guide), "--style", str(clips / "style.mp4")],
                 ["--guide", str(clips / "guide.mp4"), "--style", str(guide)]):
        rc = main(["deflicker", *args, "-o", str(guide), *FASTARGS])
        err = capsys.readouterr().err
        assert rc == 2 and "would replace it" in err
    assert guide.read_bytes() == before
    # the same folder by another spelling
    rc = main(["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(clips / "keys"),
               "-o", str(clips / "keys") + "/.", *FASTARGS])
    assert rc == 2 and "--keyframes input" in capsys.readouterr().err
    # an input named as the output's partial (shot.partial.mp4 for -o shot.mp4, shot.partial/ for -o shot)
    # was deleted when the run finished, or replaced by the kept frames when it was stopped
    partial = tmp_path / "shot.partial.mp4"
    partial.write_bytes(before)
    shots = tmp_path / "shot.partial"
    shots.mkdir()
    video.write(shots, video.read(guide)[0])
    for given, out in ((partial, tmp_path / "shot.mp4"), (shots, tmp_path / "shot")):
        rc = main(["deflicker", "--guide", str(given), "--style", str(clips / "style.mp4"), "-o", str(out), *FASTARGS])
        assert rc == 2 and f"{given.name}, where a stopped run keeps its frames" in capsys.readouterr().err
    assert partial.read_bytes() == before and len(video.read(shots)[0]) == len(video.read(guide)[0])


def test_an_output_that_is_a_link_is_written_where_it_points(clips, tmp_path, capsys, caplog):
    """-o link.mp4 replaced the link with a regular file without a word (a link to /dev/null too, which
    root's writable /dev let eval's --json replace)."""
    (tmp_path / "store").mkdir()
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS]
    for name in ("v.mp4", "v.gif", "frames"):
        link = tmp_path / f"link-{name}"
        link.symlink_to(tmp_path / "store" / name)  # dangling until written
        with caplog.at_level("INFO", logger="flickerless"):
            assert main([*args, "-o", str(link)]) == 0
            assert main([*args, "-o", str(link)]) == 0  # and again, over the earlier output
        assert link.is_symlink() and video.probe(tmp_path / "store" / name).frames == 6
        assert f"{link} is a link: the output is written to {tmp_path / 'store' / name}" in caplog.text
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["frames", "v.gif", "v.mp4"]  # none left
    (tmp_path / "link-j").symlink_to(tmp_path / "store" / "j")
    video.write_whole(tmp_path / "link-j", "{}")
    assert (tmp_path / "link-j").is_symlink() and (tmp_path / "store" / "j").read_text() == "{}"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link-fifo.mp4").symlink_to(tmp_path / "fifo")
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "link-fifo.mp4")]) == 2
    assert f"is not a file or a folder (through the link, {tmp_path / 'fifo'})" in capsys.readouterr().err
    assert main(["eval", "--video", str(clips / "style.mp4"), "--source", str(clips / "guide.mp4"), "--metrics",
                 "pixel_mse", "-q", "--json", str(tmp_path / "fifo")]) == 2
    out, err = capsys.readouterr()
    assert "fifo: is not a file or a folder; an output would replace it" in err and "pixel_mse" not in out


def test_an_output_or_input_that_is_a_link_loop_is_said_in_one_line(clips, tmp_path, capsys):
    """``ln -s loop.mp4 loop.mp4`` given as -o ended in pathlib's "Symlink loop" RuntimeError traceback; as
    an input it was said not to exist."""
    (tmp_path / "loop.mp4").symlink_to("loop.mp4")
    (tmp_path / "a.mp4").symlink_to("b.mp4")
    (tmp_path / "b.mp4").symlink_to("a.mp4")
    (tmp_path / "d").symlink_to("d")
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS]
    for out, said in (("loop.mp4", "loop.mp4: is"), ("a.mp4", "a.mp4: is"), ("d/o.mp4", f"o.mp4: its folder {tmp_path / 'd'} is")):
        capsys.readouterr()
        assert main([*args, "-o", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{said} a link that points to itself" in err
    with pytest.raises(OutputError, match="loop.mp4: is a link that points to itself"):
        video.check_output_is_not_input(tmp_path / "loop.mp4", guide=clips / "guide.mp4")
    assert main(["info", str(tmp_path / "loop.mp4")]) == 2
    assert "loop.mp4: is a link that points to itself" in capsys.readouterr().err
    loop = str(tmp_path / "loop.mp4")  # as an input of each command (it was "no such file or folder")
    for cmd in (["deflicker", "--guide", loop, "--style", str(clips / "style.mp4"), "-o", str(tmp_path / "x.mp4")],
                ["eval", "--video", loop], ["train", "--model", "m", "--video", loop, "--prompt", "p", "-o",
                                            str(tmp_path / "lora")]):
        assert main(cmd) == 2
        assert f"--{cmd[cmd.index(loop) - 1][2:]} {loop}: is a link that points to itself" in capsys.readouterr().err
    # a chain of 45 links that ends in a file is no loop (the kernel gives up after 40): written through
    (tmp_path / "c0.mp4").write_bytes(b"")
    for i in range(1, 46):
        (tmp_path / f"c{i}.mp4").symlink_to(f"c{i - 1}.mp4")
    assert main([*args, "-o", str(tmp_path / "c45.mp4")]) == 0
    assert (tmp_path / "c45.mp4").is_symlink() and len(video.read(tmp_path / "c0.mp4")[0]) == 6


def test_png_output_replaces_only_an_earlier_output(clips, tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS]
    rc = main([*args, "-o", str(folder)])
    assert rc == 2 and "holds other files (notes.txt)" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "mine"
    out = tmp_path / "frames"
    out.mkdir()
    (out / "00099.png").write_bytes(b"a clip's frame")  # numbered PNGs not written here: refused, kept
    rc = main([*args, "-o", str(out)])
    assert rc == 2 and "did not write" in capsys.readouterr().err and (out / "00099.png").exists()
    video.mark_output(out)  # an earlier output of ours: replaced whole
    assert main([*args, "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [video.OUTPUT_MARK] + [f"{i:05d}.png" for i in range(6)]
    assert len(video.read(out)[0]) == 6  # the mark is not a frame
    assert main([*args, "-o", str(out)]) == 0  # and the output it wrote is replaced the next time


@pytest.mark.parametrize("name, says", [("o.mp44", "is not an output this writes"), ("o.txt", "is not an output this writes"),
                                        ("o.v2/", None), ("take.2024", None),
                                        (".mp4", "has no name before its extension"),
                                        ("out.webm ", "the name ends in a space"), ("frames ", "the name ends in a space")])
def test_an_output_named_like_an_unknown_file_type_is_refused(clips, tmp_path, capsys, name, says):
    """"-o out.mp44" became a folder of PNGs without a word; a folder with a dot in its name ends in /.
    So did "$NAME.mp4" with NAME empty (a hidden folder) and a name pasted with a space after it."""
    out = str(tmp_path / name.rstrip("/")) + ("/" if name.endswith("/") else "")
    rc = main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), *FASTARGS, "-o", out])
    assert rc == (0 if says is None else 2)
    assert (says is None) == (tmp_path / name.rstrip("/")).is_dir()
    if says is not None:
        assert says in capsys.readouterr().err and not (tmp_path / name).exists()



@pytest.mark.parametrize("name, ok", [("o.txt", False), ("o.v2/", True), ("frames", True)])
def test_python_write_reads_the_output_name_as_the_commands_do(tmp_path, name, ok):
    """``video.write("out.txt", frames)`` made a folder of PNGs named so, where ``-o out.txt`` is refused."""
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    out = str(tmp_path / name.rstrip("/")) + ("/" if name.endswith("/") else "")
    if ok:
        assert video.write(out, frames) == 2 and len(video.read(out)[0]) == 2
    else:
        with pytest.raises(video.OutputError, match="is not an output this writes"):
            video.write(out, frames)
        assert not (tmp_path / name).exists()

def _sound(path):
    """(codec, seconds) of a clip's sound, or None."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(audio=0))
        return s.codec_context.name, samples / s.rate


def test_writer_carries_sound_cut_to_the_frames(sound_clip, tmp_path):
    assert _sound(sound_clip)[0] == "aac" and abs(_sound(sound_clip)[1] - 30 / 25) < 0.05
    frames, fps = video.read(sound_clip)
    # from 0.4 s on, for 10 frames: the sound is cut to 0.4 s and starts where the frames do
    out = tmp_path / "cut.mkv"
    with video.VideoWriter(out, fps, audio=sound_clip, audio_start=0.4) as w:
        for f in frames[10:20]:
            w.write(f)
    codec, seconds = _sound(out)
    assert codec == "aac" and abs(seconds - 0.4) < 0.05
    assert video.probe(out).frames == 10
    # copied as it is, from where the frames start: the first packet is the source's first at or after
    # 0.4 s, and it plays at the output's start
    import av

    def packets(path):
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(s) if p.size]

    source, cut = packets(sound_clip), packets(out)
    first = next(i for i, (t, _) in enumerate(source) if t >= 0.4)
    assert [b for _, b in cut] == [b for _, b in source[first:first + len(cut)]]
    assert abs(cut[0][0] - (source[first][0] - 0.4)) < 0.01
    # a clip without sound, or a folder, adds none; PNG outputs ignore it
    video.write(tmp_path / "mute.mp4", frames[:3], fps)
    with video.VideoWriter(tmp_path / "o.mp4", fps, audio=tmp_path / "mute.mp4") as w:
        w.write(frames[0])
    assert _sound(tmp_path / "o.mp4") is None


def _clip_with_tone(path, fmt, frames, audio_codec, seconds, silent=0.0, delay=0.0, rate=48000, times=None):
    """A clip of ``frames`` at 25 fps (or each at its time of ``times``, in seconds) with a mono 440 Hz
    tone of ``seconds`` (silent for its first ``silent`` seconds), both streams starting ``delay``
    seconds into the container's timeline."""
    from fractions import Fraction

    import av

    h, w = frames.shape[1:3]
    tick = Fraction(1, 25) if times is None else Fraction(1, 1000)
    times = np.arange(len(frames)) / 25 if times is None else times
    with av.open(str(path), "w", format=fmt) as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.time_base = v.time_base = tick
        a = c.add_stream(audio_codec, rate=rate)
        a.layout = "mono"
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = round((times[i] + delay) / tick), tick
            for p in v.encode(f):
                c.mux(p)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
        tone[:int(silent * rate)] = 0
        sample_format = "s16" if audio_codec.startswith("pcm_s16") else "fltp"
        for k in range(0, len(tone), 1024):
            part = tone[None, k:k + 1024]
            if sample_format == "s16":
                part = (part * 32767).astype(np.int16)
            f = av.AudioFrame.from_ndarray(part, format=sample_format, layout="mono")
            f.sample_rate, f.pts = rate, k + round(delay * rate)
            for p in a.encode(f):
                c.mux(p)
        for st in (v, a):
            for p in st.encode():
                c.mux(p)


def test_a_variable_rate_webm_with_sound_says_its_rate(tmp_path, carphone):
    """A helper's finding: a variable-rate WebM with Opus sound has no average rate and its blocks no
    durations; FFmpeg guesses its 1 ms tick, and it was probed as 1000 fps. Its rate is now taken over
    its frames' span."""
    frames = np.ascontiguousarray(carphone[:10, :64, :80])
    _clip_with_tone(tmp_path / "tone.mp4", "mp4", frames, "aac", 0.5)
    times = np.cumsum(np.r_[0, np.random.default_rng(5).random(10) * 0.06 + 0.015])
    with video.VideoWriter(tmp_path / "v.webm", times=times, audio=tmp_path / "tone.mp4") as w:
        for f in frames:
            w.write(f)
    span = (times[9] - times[0]) / 9
    assert abs(video.probe(tmp_path / "v.webm").fps - 1 / span) < 1, video.probe(tmp_path / "v.webm").fps


def test_sound_the_output_container_cannot_hold_is_reencoded(tmp_path):
    """PCM sound (a .mov from a camera or editor) cannot go into mp4 as it is: it is re-encoded as AAC,
    and is still the same sound (a 440 Hz tone stays at 440 Hz)."""
    import av

    src = tmp_path / "tone.mov"
    rate, seconds = 48000, 1.0
    grey = np.repeat(np.arange(0, 225, 9, dtype=np.uint8)[:, None, None, None], 32, 1).repeat(32, 2).repeat(3, 3)
    _clip_with_tone(src, "mov", grey, "pcm_s16le", seconds, rate=rate)
    frames, fps = video.read(src)
    out = tmp_path / "o.mp4"
    with video.VideoWriter(out, fps, audio=src) as w:
        for f in frames:
            w.write(f)
    codec, secs = _sound(out)
    assert codec == "aac" and abs(secs - seconds) < 0.05
    with av.open(str(out)) as c:
        got = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(got[:rate]))
    assert abs(spectrum.argmax() - 440) <= 1  # bins of 1 Hz over one second


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_reencoded_sound_stays_where_it_was_against_the_frames(tmp_path, carphone, ext):
    """An encoder starts its sound with priming samples (AAC's 1024, 21 ms at 48 kHz; Opus's 312), which
    the muxer was not told of: PCM sound re-encoded for mp4 played 21 ms late, for WebM 7 ms. A cut is
    placed at its time in the source, not at the first whole packet after it (16 ms late from frame 10)."""
    src = tmp_path / "tone.mov"
    frames = carphone[np.arange(25) % len(carphone), ::4, ::4]
    _clip_with_tone(src, "mov", frames, "pcm_s16le", 1.0, silent=0.5)  # the tone from 0.5 s
    frames, fps = video.read(src)
    for k in (0, 10):  # frame 10 is at 0.4 s, within a packet of 1024 samples
        out = tmp_path / f"from{k}{ext}"
        with video.VideoWriter(out, fps, audio=src, audio_start=k / fps) as w:
            for f in frames[k:]:
                w.write(f)
        assert _sound(out)[0] == ("aac" if ext == ".mp4" else "opus")
        assert abs(_tone_after_first_frame(out) - (0.5 - k / fps)) < 0.003


def test_mp3_sound_is_copied_into_mp4_and_mov(tmp_path, carphone):
    """FFmpeg's MP3 decoder is named "mp3float", and that name was looked for among the codecs an mp4
    takes as they are: MP3 was re-encoded as AAC, a second lossy generation. It is copied, and plays."""
    import av

    src = tmp_path / "song.mkv"
    _clip_with_tone(src, "matroska", carphone[np.arange(25) % len(carphone), ::4, ::4], "libmp3lame", 1.0, silent=0.5,
                    rate=44100)
    frames, fps = video.read(src)
    with av.open(str(src)) as c:
        source = [bytes(p) for p in c.demux(audio=0) if p.size]
    for ext in (".mp4", ".mov"):
        out = tmp_path / f"o{ext}"
        with video.VideoWriter(out, fps, audio=src) as w:
            for f in frames:
                w.write(f)
        with av.open(str(out)) as c:
            assert c.streams.audio[0].codec_context.codec.canonical_name == "mp3"
            assert [bytes(p) for p in c.demux(audio=0) if p.size] == source
        codec, seconds = _sound(out)  # decodes, as long as the frames (and the encoder's last 20 ms)
        assert abs(seconds - 1.0) < 0.03
        assert abs(_tone_after_first_frame(out) - 0.5) < 0.003


def _tone_after_first_frame(path) -> float:
    """Seconds from a clip's first frame to where its sound rises above silence."""
    import av

    with av.open(str(path)) as c:
        first = next(c.decode(video=0)).time
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            loud = np.nonzero(np.abs(f.to_ndarray()[0]) > 0.05)[0]
            if len(loud):
                return f.time + loud[0] / f.sample_rate - first
    raise AssertionError("no sound")


def _ends(path) -> tuple[float, float, float]:
    """(the last frame's end, the decoded sound's end, the file's duration) of a clip at a constant rate."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames_end = max(float(f.time) for f in c.decode(v)) + 1 / float(v.average_rate)
    with av.open(str(path)) as c:
        sound_end = max(float(f.time) + f.samples / f.sample_rate for f in c.decode(audio=0))
        return frames_end, sound_end, c.duration / 1e6


def test_the_sound_ends_with_the_last_frame(tmp_path, carphone):
    """Sound is cut by whole packets: the last one kept ran past the last frame by up to a packet (AAC's
    1024 samples, 21 ms at 48 kHz; 10 ms here), so the output was longer than its frames and drifted when
    outputs were joined. A copied packet now ends at the last frame (Matroska drops the rest as it decodes;
    an mp4's track and duration end there, though FFmpeg decodes that packet whole), and re-encoded sound
    is cut to the sample (in an mp4, its last AAC packet is as short, by its duration)."""
    frames = carphone[np.arange(25) % len(carphone), ::4, ::4]
    for fmt, codec in (("mp4", "aac"), ("mov", "pcm_s16le")):  # copied where it can be, else re-encoded
        src = tmp_path / f"tone.{fmt}"
        _clip_with_tone(src, fmt, frames, codec, 2.0)
        got, fps = video.read(src)
        for ext in (".mkv", ".webm", ".mp4"):
            out = tmp_path / f"{fmt}{ext}"
            with video.VideoWriter(out, fps, audio=src, audio_start=5 / fps) as w:
                for f in got[5:12]:  # 0.28 s, within a packet
                    w.write(f)
            frames_end, sound_end, duration = _ends(out)
            assert abs(frames_end - 0.28) < 1e-3
            if ext == ".mp4":  # (FFmpeg decodes the last AAC packet whole: 10 ms past, as before)
                assert abs(duration - frames_end) < 1e-3
            else:
                assert abs(sound_end - frames_end) < 1e-3, (fmt, ext, sound_end)
    # an Opus track as long as the frames, copied to its end: its last packet's own end padding (which the
    # demuxer leaves out of its duration) was replaced by the few samples past the end, 12.5 ms too long
    src = tmp_path / "opus.mka.mkv"
    _clip_with_tone(src, "matroska", frames[:24], "libopus", 0.96)
    got, fps = video.read(src)
    for ext in (".webm", ".mkv"):
        out = tmp_path / f"opus{ext}"
        with video.VideoWriter(out, fps, audio=src) as w:
            for f in got:
                w.write(f)
        frames_end, sound_end, _ = _ends(out)
        assert abs(frames_end - 0.96) < 1e-3 and abs(sound_end - frames_end) < 2e-3, (ext, sound_end)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_sound_stays_in_step_with_a_clip_that_starts_late(tmp_path, carphone, ext):
    """MPEG-TS (and camcorder .MTS) clips start their timeline at a second or more: the sound is placed
    against the first frame, as it plays in the source, not against time 0."""
    src = tmp_path / "cam.ts"
    # 2 s: silence, then a tone from frame 25 (1 s after the first frame); the timeline starts at 1.4 s
    frames = carphone[np.arange(50) % len(carphone)]
    _clip_with_tone(src, "mpegts", frames, "aac", 2.0, silent=1.0, delay=1.4)
    assert abs(_tone_after_first_frame(src) - 1.0) < 0.03
    frames, fps = video.read(src)
    out = tmp_path / f"whole{ext}"
    with video.VideoWriter(out, fps, audio=src) as w:
        for f in frames:
            w.write(f)
    assert _sound(out)[0] == "aac"  # copied as it is
    assert abs(_tone_after_first_frame(out) - 1.0) < 0.03
    # from frame 10 on: the tone comes 0.6 s after the output's first frame
    cut = tmp_path / f"cut{ext}"
    with video.VideoWriter(cut, fps, audio=src, audio_start=10 / fps) as w:
        for f in frames[10:]:
            w.write(f)
    assert abs(_tone_after_first_frame(cut) - 0.6) < 0.03


def _frame_times(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        times = np.array([f.time for f in c.decode(video=0)])
    return times - times[0]


def test_frame_times_of_constant_and_variable_rate_clips(tmp_path, carphone):
    # 29.97 fps in Matroska's 1 ms ticks steps 33, 34, 33, ... ms: a constant rate all the same
    write_h264(tmp_path / "ntsc.mkv", carphone[:12], fps=Fraction(30000, 1001))
    assert video.frame_times(tmp_path / "ntsc.mkv", 12) is None
    # in MP4 with B-frames its steps are exact, but the last frame ends where the track's edit list, in
    # 1/1000 s, says: 0.0330 s, not 0.0334; it was read as a variable rate
    # (x264's B-frames on this small picture make the track end so)
    write_h264(tmp_path / "ntsc.mp4", np.ascontiguousarray(carphone[:12, ::4, ::4]), fps=Fraction(30000, 1001))
    assert video.frame_times(tmp_path / "ntsc.mp4", 12) is None
    write_h264(tmp_path / "cfr.mp4", carphone[:12])
    assert video.frame_times(tmp_path / "cfr.mp4", 12) is None
    times = np.r_[np.arange(8) * 0.1, 0.8 + np.arange(8) * 0.04]
    _clip_with_tone(tmp_path / "vfr.mp4", "mp4", carphone[np.arange(16) % len(carphone)], "aac", 1.2, times=times)
    got = video.frame_times(tmp_path / "vfr.mp4", 16)
    assert got is not None and len(got) == 17
    assert np.allclose(got[:16], times, atol=1e-3) and abs(got[16] - 1.12) < 1e-3  # the last lasts a step
    assert video.frame_times(tmp_path / "vfr.mp4", 15) is None  # timestamps that do not match the frames
    assert video.frame_times(tmp_path, 16) is None  # a folder has no timing
    # a container that does not count its frames (an OBS screen recording's MKV), asked without a count as
    # the commands ask: it was taken for a clip of 0 frames, so at a constant rate, and its times were lost
    write_h264(tmp_path / "vfr.mkv", carphone[np.arange(16) % len(carphone)], times=times)
    assert np.allclose(video.frame_times(tmp_path / "vfr.mkv")[:16], times, atol=1e-3)
    # one that says a rate of thousands a second (a muxer's tick) is read at a rate of frames: info said 3e+04 fps
    write_h264(tmp_path / "tick.mkv", carphone[np.arange(16) % len(carphone)], fps=30000, times=times)
    assert video.probe(tmp_path / "tick.mkv").fps <= 100


@pytest.mark.parametrize("steps", ["random", "short last"])
@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_a_variable_rate_outputs_last_frame_keeps_its_duration(tmp_path, carphone, ext, steps):
    """With frames reordered (H.264's B-frames), an MP4 stores no duration of the last frame shown: the
    writer makes the track end where that frame ends, and frame_times reads it back (it used to read the
    step before it, 0.2 s here, so each pass through the tool cut 0.3 s off the clip). Matroska keeps
    each frame's own duration (the MP4 rule applied to it lengthened a short last frame by the frames'
    reordering delay: a last frame of 0.1 s was read back as 0.167)."""
    import av

    n = 24
    frames = carphone[np.arange(n) % len(carphone)]
    if steps == "random":
        steps = np.random.default_rng(1).choice([0.033, 0.04, 0.1, 0.2], 24)
        steps[-1] = 0.5
    else:  # a long step before a last frame of 0.1 s, on frames the encoder ends with a P-frame (measured)
        from flickerless.demo import load_clip, registry_clip

        steps = np.array([3, 3, 6, 3, 1.5, 1.5, 9, 3, 3, 3, 9, 9]) / 90
        n = len(steps)
        frames = np.stack([video.resize_frame(f, (68, 160)) for f in load_clip(registry_clip("bikes.mp4"), n)[0]])
    times = np.r_[0, np.cumsum(steps)]
    for k in range(2):  # written, read back, written again from what was read
        path = tmp_path / f"vfr{k}{ext}"
        with video.VideoWriter(path, 25, times=times) as w:
            for f in frames:
                w.write(f)
        with av.open(str(path)) as c:
            pts = [p.pts for p in c.demux(video=0) if p.pts is not None]
        assert any(np.diff(pts) < 0)  # the case: frames stored out of the order they are shown
        got = video.frame_times(path, n)
        assert got is not None and np.allclose(got, times, atol=2e-3), (got[-3:], times[-3:])
        times = got


@pytest.mark.parametrize("sound", [False, True])
def test_a_variable_rate_mp4_ends_where_its_last_frame_does(tmp_path, carphone, sound):
    """An MP4's track ends where the latest frame's time plus its packet's duration says: the last
    packet given a duration by decoding times cut a last frame shown in order short by the encoder's
    delay (0.5 s played as 0.44), and with sound the copy that adds it took each packet's duration
    from the decoding times it read back (up to 0.3 s short or 0.45 s long)."""
    import av

    audio = None
    if sound:
        audio = tmp_path / "tone.mp4"
        _clip_with_tone(audio, "mp4", carphone[np.arange(100) % len(carphone), ::4, ::4], "aac", 4.0)
    rng = np.random.default_rng(3)
    cases = [np.array([100, 40, 40, 40, 100, 40, 40, 100]) / 1000]
    cases += [rng.choice([0.02, 0.033, 0.04, 0.05, 0.1, 0.2, 0.5], int(rng.integers(4, 16))) for _ in range(6)]
    for steps in cases:
        times = np.r_[0, np.cumsum(steps)]
        path = tmp_path / "vfr.mp4"
        with video.VideoWriter(path, 25, times=times, audio=audio) as w:
            for f in carphone[np.arange(len(steps)) % len(carphone), ::4, ::4]:
                w.write(f)
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            ends = [float(s.duration * s.time_base)] + ([] if sound else [c.duration / 1e6])
        got = video.frame_times(path, len(steps))
        assert np.allclose(ends, times[-1], atol=2e-3) and np.allclose(got, times, atol=2e-3), (steps, ends, got)


def test_gif_output_has_one_palette_and_the_clips_timing(tmp_path, carphone):
    """A GIF output: one palette for every frame and no dithering, so what stands still keeps its
    colours from frame to frame (per-frame palettes would make it flicker); 30 fps as delays of 3 and
    4 hundredths of a second, read back as 30 fps; a photo's colours within a few levels, and neither
    darker nor lighter (PIL's own palette lookup made them 1.4 levels darker)."""
    clip = np.ascontiguousarray(carphone[:12]).copy()
    clip[:, :, :60] = carphone[0, :, :60]  # the left part stands still
    out = tmp_path / "o.gif"
    with video.VideoWriter(out, 30) as w:
        for f in clip:
            w.write(f)
    back, fps = video.read(out)
    assert back.shape == clip.shape and abs(fps - 30) < 1e-6
    assert all(np.array_equal(back[0, :, :60], b[:, :60]) for b in back)
    error = back.astype(float) - clip
    assert np.abs(error).mean() < 2.1  # 1.80; 2.42 with PIL's lookup and median cut's colours
    assert np.all(np.abs(error.mean(axis=(0, 1, 2))) < 0.3)  # each channel: -1.40, -1.43, -1.37 before
    assert sorted(os.listdir(tmp_path)) == ["o.gif"]  # the frames kept until close are gone


def test_a_gif_of_few_colours_is_written_and_a_failed_gif_keeps_its_frames(tmp_path, carphone, monkeypatch):
    """Grey footage and flat graphics have fewer than 255 colours: the palette came back shorter and the
    GIF failed with a ValueError, which, not being an OSError, lost the frames too."""
    grey = np.repeat(carphone[:4].mean(-1).astype(np.uint8)[..., None], 3, -1)
    flat = np.zeros((3, 16, 24, 3), np.uint8)
    flat[:, :, :12] = (200, 30, 30)
    for i in range(3):
        flat[i, 4:8, 4 * i : 4 * i + 6] = 255
    for name, clip in (("grey.gif", grey), ("flat.gif", flat)):
        video.write(tmp_path / name, clip, 10)
        back, _ = video.read(tmp_path / name)
        assert back.shape == clip.shape and np.abs(back.astype(int) - clip).max() <= (2 if name == "grey.gif" else 0)

    # a pause in a flat animation on black: PIL took the second still frame for the first (the see-through
    # index was black too) and folded it in; 6 frames came back as 4
    pause = np.zeros((6, 32, 48, 3), np.uint8)
    for i, x in enumerate([0, 4, 8, 8, 8, 12]):
        pause[i, 10:20, 10 + x : 20 + x] = 255
    video.write(tmp_path / "pause.gif", pause, 10)
    assert np.array_equal(video.read(tmp_path / "pause.gif")[0], pause)

    def broken(*a, **k):
        raise ValueError("a fault of the GIF writer's own")

    monkeypatch.setattr(video, "_write_gif", broken)
    w = video.VideoWriter(tmp_path / "o.gif", 10)
    for f in grey:
        w.write(f)
    with pytest.raises(OutputError, match="writing the GIF failed \\(ValueError: a fault"):
        w.close()
    kept = w.keep_partial()
    assert kept is not None and np.array_equal(video.read(kept)[0], grey)


@pytest.mark.parametrize("fps", [30, 25, 24, 15, 29.97, 100 / 3])
@pytest.mark.parametrize("n", [5, 10, 31])
def test_a_gif_reads_back_at_the_rate_it_was_written(tmp_path, fps, n):
    """A GIF's frames start at whole hundredths: 10 frames at 30 fps last 0.33 s, which read as 30.3 fps.
    A common rate that gives the length to within half a hundredth is taken (a whole number where 29.97
    fits too); a GIF of 3-hundredth delays throughout is 33.3 fps."""
    out = tmp_path / "o.gif"
    video.write(out, np.random.default_rng(0).integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), fps)
    assert video.probe(out).fps == pytest.approx(30 if fps == 29.97 else fps)


@pytest.mark.parametrize("name", ["t.mp4", "t.gif"])
def test_more_frames_than_times_is_an_error(name, tmp_path, carphone):
    with pytest.raises(ValueError, match="frame 2 written, but times are given for 2"):
        with video.VideoWriter(tmp_path / name, 10, times=[0, 0.1, 0.25]) as w:
            for f in carphone[:3]:
                w.write(f)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name, codec", [("a.mp4", "h265"), ("a.mov", "prores")])
def test_other_codecs_keep_an_anamorphic_pixel_shape(name, codec, tmp_path, carphone):
    with video.VideoWriter(tmp_path / name, 25, codec=codec, pixel_aspect=Fraction(16, 11)) as w:
        w.write(carphone[0])
    assert video.probe(tmp_path / name).pixel_aspect == Fraction(16, 11)


def test_decoding_times_x265_leaves_unset_are_mended(tmp_path, carphone):
    """FFmpeg's libx265 wrapper gives a clip of fewer than 3 frames decoding times from memory it never
    set; the mp4 muxer refused about 1 in 300 such one-frame writes ("pts/dts pair unsupported"), which
    made the H.265 tests above fail now and then. A stream's own valid times are left alone."""
    import av

    w = video.VideoWriter(tmp_path / "a.mp4", 25, codec="h265")
    try:
        def times(pairs):
            out = []
            for pts, dts in pairs:
                p = av.Packet()
                p.pts, p.dts = pts, dts
                w._mend_dts(p)
                out.append((p.pts, p.dts))
            return out

        assert times([(0, 7518566456726496514)]) == [(0, 0)]  # seen for one frame, as the next two
        w._last_dts = None
        assert times([(0, -4611756388245323776)]) == [(0, 0)]
        w._last_dts = None
        assert times([(0, -8071683253333590058), (1, -8071683253333590057)]) == [(0, 0), (1, 1)]
        w._last_dts = None
        reordered = [(0, -2), (1, -1), (4, 0), (3, 1), (2, 2), (7, 3)]  # 6 frames, as x265 gives them
        assert times(reordered) == reordered
    finally:
        w.abort()
    for n in (1, 2):  # and written: as many frames as given, at their times
        with video.VideoWriter(tmp_path / f"{n}.mp4", 25, codec="h265") as out:
            for f in carphone[:n]:
                out.write(f)
        frames, fps = video.read(tmp_path / f"{n}.mp4")
        assert len(frames) == n and fps == 25


@pytest.mark.parametrize("name, codec", [("a.mkv", "ffv1"), ("a.webm", "vp9")])
def test_a_codec_that_drops_the_pixel_shape_says_so(name, codec, tmp_path, carphone, caplog):
    with caplog.at_level("WARNING", logger="flickerless"):
        with video.VideoWriter(tmp_path / name, 25, codec=codec, pixel_aspect=Fraction(16, 11)) as w:
            w.write(carphone[0])
    assert f"{codec} does not keep the pixel shape (16/11)" in caplog.text
    assert video.probe(tmp_path / name).pixel_aspect == 1  # as said: if FFmpeg comes to keep it, drop the warning


def test_a_gif_faster_than_50_fps_is_warned_about(tmp_path, carphone, caplog):
    with caplog.at_level("WARNING", logger="flickerless"), video.VideoWriter(tmp_path / "fast.gif", 60) as w:
        for f in carphone[:4]:
            w.write(f)
    assert "frames shorter than 2/100 s" in caplog.text and "--fps 25" in caplog.text
    assert len(video.read(tmp_path / "fast.gif")[0]) == 4


def test_a_gif_above_100_fps_says_how_long_it_plays_and_a_burst_does_not_drift(tmp_path, carphone, caplog):
    """A GIF's frame lasts 1/100 s at least: 24 frames at 1000 fps played 10x as long with only "many viewers
    slow them" said, and each frame shorter than that pushed every later one back (a variable-rate
    burst of 4 frames in 3 ms made the rest 30 ms late). Every frame is kept; the time is said, and the
    frames after a burst catch up."""
    with caplog.at_level("WARNING", logger="flickerless"), video.VideoWriter(tmp_path / "fast.gif", 1000) as w:
        for f in carphone[:12]:
            w.write(f)
    assert "100 fps at most): with every frame kept, its 12 frames last 0.12 s instead of 0.012 s (10.0x as long)" \
        in caplog.text and len(video.read(tmp_path / "fast.gif")[0]) == 12
    times = [0, 0.001, 0.002, 0.003, 0.1, 0.2, 0.3]
    with video.VideoWriter(tmp_path / "burst.gif", 10, times=times) as w:
        for f in carphone[:6]:
            w.write(f)
    got = video.frame_times(tmp_path / "burst.gif", 6)
    assert got is not None and np.allclose(got, [0, 0.01, 0.02, 0.03, 0.1, 0.2, 0.3], atol=1e-3)


def test_cli_gif_output_keeps_a_held_last_frame(tmp_path, carphone, caplog, monkeypatch):
    from PIL import Image

    imgs = [Image.fromarray(f) for f in carphone[:6]]
    imgs[0].save(tmp_path / "hold.gif", save_all=True, append_images=imgs[1:], duration=[100] * 5 + [800], loop=0)
    video.write(tmp_path / "style", video.read(tmp_path / "hold.gif")[0], 10)
    assert main(["deflicker", "--guide", str(tmp_path / "hold.gif"), "--style", str(tmp_path / "style"), "--device",
                 "cpu", "-q", "-o", str(tmp_path / "out.gif"), *FASTARGS]) == 0
    got = video.frame_times(tmp_path / "out.gif", 6)
    assert got is not None and np.allclose(got, [0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.3], atol=1e-3)
    # a GIF too long to write in memory comfortably is warned about before the work
    monkeypatch.setattr(video, "MEMORY_LIMIT", 6 * 144 * 176 - 1)
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main(["deflicker", "--guide", str(tmp_path / "hold.gif"), "--style", str(tmp_path / "style"),
                     "--device", "cpu", "-q", "-o", str(tmp_path / "out2.gif"), *FASTARGS]) == 0
    assert "a GIF of 6 frames of 176x144 holds about" in caplog.text


def test_a_gifs_last_frame_keeps_its_own_delay(tmp_path, carphone):
    """A GIF (packets in the order they are shown) that holds its last frame: that frame keeps its delay,
    in the times read and in the CLI's output; an even GIF stays a constant rate."""
    from PIL import Image

    imgs = [Image.fromarray(f) for f in carphone[:6]]
    imgs[0].save(tmp_path / "even.gif", save_all=True, append_images=imgs[1:], duration=100, loop=0)
    assert video.frame_times(tmp_path / "even.gif", 6) is None
    imgs[0].save(tmp_path / "hold.gif", save_all=True, append_images=imgs[1:], duration=[100] * 5 + [800], loop=0)
    got = video.frame_times(tmp_path / "hold.gif", 6)
    assert got is not None and np.allclose(got, [0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.3], atol=1e-3)
    style = video.read(tmp_path / "hold.gif")[0]
    video.write(tmp_path / "style", style, 10)
    assert main(["deflicker", "--guide", str(tmp_path / "hold.gif"), "--style", str(tmp_path / "style"), "--device",
                 "cpu", "-q", "-o", str(tmp_path / "out.mp4"), *FASTARGS]) == 0
    import av

    with av.open(str(tmp_path / "out.mp4")) as c:
        s = c.streams.video[0]
        assert abs(float(s.duration * s.time_base) - 1.3) < 0.02  # the last frame is held 0.8 s


def test_cli_keeps_a_variable_rate_guides_timing_and_sound_in_step(tmp_path, carphone):
    """Phone footage is often variable-rate: each output frame is shown when its guide frame was, and the
    sound stays in step with it (at the average rate, frame 15 would come 0.45 s early)."""
    from flickerless.synthetic import flickering_pair

    frames = carphone[np.arange(30) % len(carphone)]
    times = np.r_[np.arange(15) * 0.1, 1.5 + np.arange(15) * 0.04]  # 10 fps, then 25 fps
    guide = tmp_path / "phone.mp4"
    _clip_with_tone(guide, "mp4", frames, "aac", 2.2, silent=1.5, times=times)  # the tone starts at frame 15
    assert abs(_tone_after_first_frame(guide) - 1.5) < 0.03
    _, flick = flickering_pair(video.read(guide)[0])
    video.write(tmp_path / "style.mp4", flick, 25)
    base = ["deflicker", "--guide", str(guide), "--style", str(tmp_path / "style.mp4"), "--device", "cpu", "-q",
            *FASTARGS]
    assert main([*base, "-o", str(tmp_path / "out.mp4")]) == 0
    assert np.allclose(_frame_times(tmp_path / "out.mp4"), times, atol=2e-3)
    assert abs(_tone_after_first_frame(tmp_path / "out.mp4") - 1.5) < 0.03
    # a range: its frames keep their spacing, and the sound is cut at its first frame's time
    assert main([*base, "-o", str(tmp_path / "part.mp4"), "--frames", "10:25"]) == 0
    assert np.allclose(_frame_times(tmp_path / "part.mp4"), times[10:25] - times[10], atol=2e-3)
    assert abs(_tone_after_first_frame(tmp_path / "part.mp4") - 0.5) < 0.03
    # --fps asks for an even rate
    assert main([*base, "-o", str(tmp_path / "even.mp4"), "--fps", "20"]) == 0
    assert np.allclose(_frame_times(tmp_path / "even.mp4"), np.arange(30) / 20, atol=2e-3)


def test_a_matroska_clip_is_counted_from_its_packets(tmp_path, carphone, monkeypatch):
    """Matroska (and WebM, MPEG-TS) headers hold no frame count: each probe decoded the whole clip to count
    it (a run probes four times), where its packets say it; and a cut mid-GOP went unsaid there."""
    import av

    from tests.conftest import write_cut_mid_gop

    mkv = tmp_path / "c.mkv"
    from flickerless.demo import registry_clip

    with av.open(str(registry_clip("carphone_pristine.mp4"))) as src, av.open(str(mkv), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(video=0):
            if p.size:
                p.stream = out
                dst.mux(p)
    decoded = len(video.read(mkv)[0])
    monkeypatch.setattr(video, "iter_frames", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    assert video.probe(mkv).frames == decoded == 120
    monkeypatch.undo()
    cut = write_cut_mid_gop(tmp_path, carphone[:12], name="cut.mkv")
    info = video.probe(cut)
    assert (info.frames, info.lost_at_start) == (len(video.read(cut)[0]), 2)


def test_the_main_video_stream_is_read_and_cover_art_is_none(tmp_path, caplog):
    """The first video stream was read whatever it was: a one-frame thumbnail track before the main video
    (read in its place, without a word), an .mp3's cover art (a one-frame "video" at 90000 fps)."""
    import io

    import av
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), (255, 255, 0), np.uint8)).save(buf, "JPEG")
    two = tmp_path / "two.mkv"
    with av.open(str(two), "w") as c:
        thumb = c.add_stream("mjpeg")
        thumb.width = thumb.height = 40
        thumb.pix_fmt = "yuvj420p"
        main_ = c.add_stream("libx264", rate=24)
        main_.width, main_.height, main_.pix_fmt = 96, 64, "yuv420p"
        pk = av.Packet(buf.getvalue())
        pk.stream, pk.pts, pk.dts = thumb, 0, 0
        c.mux(pk)
        for i in range(12):
            for p in main_.encode(av.VideoFrame.from_ndarray(np.full((64, 96, 3), 20 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in main_.encode():
            c.mux(p)
    video._packet_counts.cache_clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        info = video.probe(two)
        frames = video.read(two)[0]
    assert (info.frames, info.height, info.width) == (12, 64, 96) == (len(frames), *frames.shape[1:3])
    assert video._packet_counts.cache_info().misses == 1  # which stream is the clip: one pass over the file
    assert caplog.text.count("has 2 video streams: stream 1 (96x64) is read") == 1
    song = tmp_path / "song.mp3"
    with av.open(str(song), "w") as c:
        audio = c.add_stream("libmp3lame", rate=44100)
        art = c.add_stream("mjpeg")
        art.width = art.height = 40
        art.pix_fmt = "yuvj420p"
        art.disposition = av.stream.Disposition.attached_pic
        for k in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((2, 1152), np.float32), format="fltp", layout="stereo")
            f.sample_rate, f.pts = 44100, k * 1152
            for p in audio.encode(f):
                c.mux(p)
        pk = av.Packet(buf.getvalue())
        pk.stream, pk.pts, pk.dts = art, 0, 0
        c.mux(pk)
        for p in audio.encode():
            c.mux(p)
    with pytest.raises(InputError, match="song.mp3: has no video stream \\(only cover art\\)"):
        video.probe(song)


def test_a_raw_dv_file_has_its_own_rate(tmp_path):
    """FFmpeg 8's raw DV demuxer gives one frame a tick of its time base as the average rate: a .dv
    capture read as 60000 fps, and deflicker refused it with an error about an --fps never given."""
    import av

    dv = tmp_path / "tape.dv"
    with av.open(str(dv), "w") as c:
        s = c.add_stream("dvvideo", rate=25)
        s.width, s.height, s.pix_fmt = 720, 576, "yuv420p"
        for i in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((576, 720, 3), 40 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert video.probe(dv).fps == 25


def test_a_clip_cut_mid_gop_is_counted_as_it_decodes(tmp_path, carphone, capsys, caplog):
    """A clip cut without re-encoding (a stream capture, a copy cut mid-GOP) starts with frames that refer to
    a keyframe it lacks, which the decoder drops: its header's count (and `info`) said 10 frames where 7
    decode, and a run wrote 7 without a word. A --frames range past the clip's end is said too."""
    from tests.conftest import write_cut_mid_gop

    cut = write_cut_mid_gop(tmp_path, carphone[:12])
    whole = tmp_path / "gop.mkv"  # the clip it was cut from
    info = video.probe(cut)
    frames = video.read(cut)[0]
    assert (info.frames, info.lost_at_start) == (len(frames), 2) == (8, 2)
    assert np.array_equal(frames, video.read(whole)[0][4:])  # frame 0 is the first that decodes
    assert main(["info", str(cut)]) == 0
    assert "damaged     the first 2 frames cannot be decoded" in capsys.readouterr().out
    assert video.probe(whole).lost_at_start == 0
    caplog.clear()
    assert main(["deflicker", "--guide", str(cut), "--style", str(cut), "-o", str(tmp_path / "o.mp4"),
                 "--frames", "5:20", *FASTARGS]) == 0
    said = caplog.text
    assert "its first 2 frames cannot be decoded" in said and "--frames 5:20: the clip has 8 frames; frames 5-7" in said
    assert video.probe(tmp_path / "o.mp4").frames == 3


def test_a_guide_that_lost_its_first_frames_is_not_paired_from_zero(tmp_path, carphone, capsys):
    """A guide cut mid-GOP lost its first frames; a style made of the whole stretch has them. The count
    advice said to add --frames 0:N, which paired every frame that many off without a word: the lost
    frames are the difference, and the advice now says which style frames to drop."""
    from tests.conftest import write_cut_mid_gop

    cut = write_cut_mid_gop(tmp_path, carphone[:12])  # 10 packets from frame 2 of the whole; 8 decode
    whole = video.read(tmp_path / "gop.mkv")[0]
    style = tmp_path / "style.mkv"
    write_h264(style, whole[2:])  # the stretch the cut's packets stand for, all of it
    g, st = video.read(cut)[0].astype(float), video.read(style)[0].astype(float)
    off = [np.abs(g - st[k:k + len(g)]).mean() for k in (0, 2)]
    assert off[1] < off[0] / 2, off  # guide frame k is style frame k+2 (re-encoded: a few levels apart; 8 at k = 0)
    assert main(["info", str(cut), str(style)]) == 0
    out = capsys.readouterr().out
    assert "the guide starts 2 frames later than the style: its first 2 frames cannot be decoded" in out
    assert "drop the style's first 2 frames first" in out and "--frames 0:" not in out
    assert main(["deflicker", "--guide", str(cut), "--style", str(style), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert "frame k of the guide is frame k+2 of the style" in err and "--frames 0:" not in err
    # the other way round: the style lost them
    assert main(["info", str(style), str(cut)]) == 0
    assert "the style starts 2 frames later than the guide" in capsys.readouterr().out
    # a longer style that does not start where the guide's lost frames were: the general advice, with
    # the lost frames named so that the user checks the start
    assert main(["info", str(cut), str(tmp_path / "gop.mkv")]) == 0
    out = capsys.readouterr().out
    assert "if the two start at the same frame, add --frames 0:8" in out
    assert "the guide's first 2 frames cannot be decoded, so check that the two start at the same frame" in out


def test_cli_keeps_the_guides_sound(sound_clip, tmp_path, caplog):
    from flickerless.synthetic import flickering_pair

    guide, _ = video.read(sound_clip, max_frames=8)
    _, flick = flickering_pair(guide)
    video.write(tmp_path / "style.mp4", flick, 25)
    base = ["deflicker", "--guide", str(sound_clip), "--style", str(tmp_path / "style.mp4"), "--device", "cpu", *FASTARGS]
    guide8 = tmp_path / "guide8.mp4"  # the guide's first 8 frames, with their sound
    with video.VideoWriter(guide8, 25, audio=sound_clip) as w:
        for f in guide:
            w.write(f)
    base[2] = str(guide8)
    assert main([*base, "-o", str(tmp_path / "a.mp4")]) == 0
    codec, secs = _sound(tmp_path / "a.mp4")
    assert codec == "aac" and abs(secs - 8 / 25) < 0.05
    assert main([*base, "-o", str(tmp_path / "b.mp4"), "--no-audio"]) == 0
    assert _sound(tmp_path / "b.mp4") is None
    with caplog.at_level("INFO", logger="flickerless"):
        assert main([*base, "-o", str(tmp_path / "c.mp4"), "--fps", "12"]) == 0
    assert _sound(tmp_path / "c.mp4") is None and "sound is left out" in caplog.text


def test_cli_frames_range_blends_with_neighbours_outside_it(clips, tmp_path):
    """--frames 2:4 gives frames 2 and 3 exactly as a whole-clip run does (window mode): their
    neighbours outside the range are read and blended in, and PatchMatch is seeded per pair of clip
    frames, not per position in what was read."""
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "all")]) == 0
    assert main([*args, "-o", str(tmp_path / "part"), "--frames", "2:4"]) == 0
    whole, part = video.read(tmp_path / "all")[0], video.read(tmp_path / "part")[0]
    assert len(part) == 2 and np.array_equal(part, whole[2:4])
    # table mode: the table's blocks are laid out from the video's ends, wherever the read starts
    args[args.index("window")] = "table"
    assert main([*args, "-o", str(tmp_path / "tall")]) == 0
    assert main([*args, "-o", str(tmp_path / "tpart"), "--frames", "3:"]) == 0
    whole, part = video.read(tmp_path / "tall")[0], video.read(tmp_path / "tpart")[0]
    assert len(part) == 3 and np.array_equal(part, whole[3:])
    # keyframes mode reads back to the keyframes that bracket the range (0 and 5 here): equal
    keys = ["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(clips / "keys"), *FASTARGS]
    assert main([*keys, "-o", str(tmp_path / "kall")]) == 0
    assert main([*keys, "-o", str(tmp_path / "kpart"), "--frames", "2:4"]) == 0
    assert np.array_equal(video.read(tmp_path / "kpart")[0], video.read(tmp_path / "kall")[0][2:4])


def _stopping_at(k, real):
    """``video.host_frame`` that stops the run (as Ctrl-C) at its k-th frame; ``.calls[0]`` counts
    them (set it to 0 to stop at the k-th again)."""
    calls = [0]

    def host_frame(img):
        calls[0] += 1
        if calls[0] == k:
            raise KeyboardInterrupt
        return real(img)

    host_frame.calls = calls
    return host_frame


def test_cli_table_mode_ranges_and_resume_give_the_whole_runs_frames(carphone, tmp_path, monkeypatch):
    """Table mode (the default) on a clip with a hard cut: a --frames range, and a run stopped and
    resumed, give exactly the frames of one run over the whole clip. The table's blocks are counted
    from the video's first and last frames, not from where a range's read starts (before, every frame
    of a range differed by ~45 dB; a resume matched only when its read began on a block boundary)."""
    from flickerless.demo import registry_clip
    from flickerless.synthetic import add_flicker

    bikes = np.stack([video.resize_frame(f, (48, 64)) for f in video.read(registry_clip("bikes.mp4"), 18)[0]])
    clip = np.concatenate([np.stack([video.resize_frame(f, (48, 64)) for f in carphone[:18]]), bikes])
    video.write(tmp_path / "g", clip)
    video.write(tmp_path / "s", add_flicker(clip))
    args = ["deflicker", "--guide", str(tmp_path / "g"), "--style", str(tmp_path / "s"), "--device", "cpu",
            "--window", "5", *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    whole = video.read(tmp_path / "whole")[0]
    for r in ("7:29", "13:", ":23"):
        out = tmp_path / f"r{r.replace(':', '_')}"
        assert main([*args, "-o", str(out), "--frames", r]) == 0
        lo, hi = (int(x) if x else d for x, d in zip(r.split(":"), (0, len(clip))))
        assert np.array_equal(video.read(out)[0], whole[lo:hi]), r
    real = video.host_frame
    monkeypatch.setattr(video, "host_frame", _stopping_at(11, real))
    assert main([*args, "-o", str(tmp_path / "o")]) == 130
    monkeypatch.setattr(video, "host_frame", real)
    assert len(video.read(tmp_path / "o.partial")[0]) == 10  # resumed from frame 10: not a block boundary
    assert main([*args, "-o", str(tmp_path / "o"), "--resume"]) == 0
    assert np.array_equal(video.read(tmp_path / "o")[0], whole)


@pytest.mark.parametrize("stream", ["--no-stream", "--stream"])
def test_cli_interrupted_keeps_the_frames_done_and_resumes(clips, tmp_path, monkeypatch, capsys, stream):
    """A stopped run keeps the frames it wrote; --resume takes them as they are, computes the rest,
    and gives the frames an uninterrupted run gives (PNG output: exactly). Streamed too: the decoding
    threads stop with the run, and the resumed run streams from the frames it still needs."""
    import flickerless.cli as cli

    real = video.host_frame
    stop_at_the_fourth = _stopping_at(4, real)
    calls = stop_at_the_fourth.calls

    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", stream, *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    out = tmp_path / "o"
    with pytest.raises(InputError, match="does not exist"):
        cli.cmd_deflicker(cli.build_parser().parse_args([*args, "-o", str(out), "--resume"]))
    monkeypatch.setattr(video, "host_frame", stop_at_the_fourth)
    assert main([*args, "-o", str(out)]) == 130
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("decode ")]  # the readers' threads stopped
    err = capsys.readouterr().err
    assert not out.exists() and "frames 0-2 of" in err and "--resume" in err
    assert len(video.read(tmp_path / "o.partial")[0]) == 3
    monkeypatch.setattr(video, "host_frame", real)
    # other settings than the stopped run's: refused, naming what differs
    assert main([*args[:-len(FASTARGS)], "--iterations", "3", "--patch-sizes", "7,5", "-q", "-o", str(out), "--resume"]) == 2
    assert "other patchmatch" in capsys.readouterr().err
    assert main([*args, "-o", str(out), "--resume"]) == 0
    assert np.array_equal(video.read(out)[0], video.read(tmp_path / "whole")[0])
    assert not (tmp_path / "o.partial").exists() and not (tmp_path / "o.partial.json").exists()
    # an mp4 output keeps its partial as NAME.partial.mp4
    calls[0] = 0
    monkeypatch.setattr(video, "host_frame", stop_at_the_fourth)
    assert main([*args, "-o", str(tmp_path / "v.mp4")]) == 130
    assert video.probe(tmp_path / "v.partial.mp4").frames == 3
    monkeypatch.setattr(video, "host_frame", real)
    assert main([*args, "-o", str(tmp_path / "v.mp4"), "--resume"]) == 0
    assert video.probe(tmp_path / "v.mp4").frames == 6 and not (tmp_path / "v.partial.mp4").exists()
    # the same command without --resume starts over, and says that it replaces the kept frames
    calls[0] = 0
    monkeypatch.setattr(video, "host_frame", stop_at_the_fourth)
    assert main([*args, "-o", str(tmp_path / "v.mp4")]) == 130
    monkeypatch.setattr(video, "host_frame", real)
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "v.mp4")]) == 0
    assert "v.partial.mp4 holds the 3 frames of a stopped run; this run starts over" in capsys.readouterr().err
    assert not (tmp_path / "v.partial.mp4").exists()
    # a GIF output keeps its frames as they are (PNGs in NAME.gif.partial/), and the resumed GIF is
    # the uninterrupted one
    calls[0] = 0
    monkeypatch.setattr(video, "host_frame", stop_at_the_fourth)
    assert main([*args, "-o", str(tmp_path / "g.gif")]) == 130
    assert np.array_equal(video.read(tmp_path / "g.gif.partial")[0], video.read(tmp_path / "whole")[0][:3])
    monkeypatch.setattr(video, "host_frame", real)
    assert main([*args, "-o", str(tmp_path / "g.gif"), "--resume"]) == 0
    assert main([*args, "-o", str(tmp_path / "w.gif")]) == 0
    assert np.array_equal(video.read(tmp_path / "g.gif")[0], video.read(tmp_path / "w.gif")[0])
    assert not (tmp_path / "g.gif.partial").exists()


def test_stops_while_finishing_and_starting_over_lose_nothing(clips, tmp_path, monkeypatch, capsys, caplog):
    """A stop while the output was finished (a GIF's palette, the encoder's last frames, the move into
    place) lost every frame: it now waits until the output is in place. A start-over stopped early
    replaced an earlier run's longer kept frames; a kept folder missing a frame resumed shifted; an
    option given at its default (--seed 0) was "other settings"; a partial holding every frame (a
    finishing that failed: a full disk under a GIF) could not be resumed."""
    import os
    import signal

    real = video.host_frame
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    whole = video.read(tmp_path / "whole")[0]
    close = video.VideoWriter.close

    def signalled(self):  # Ctrl-C as the output is being finished
        os.kill(os.getpid(), signal.SIGINT)
        close(self)

    monkeypatch.setattr(video.VideoWriter, "close", signalled)
    for out in (tmp_path / "f", tmp_path / "f.gif"):
        capsys.readouterr()
        assert main([*args, "-o", str(out)]) == 130
        err = capsys.readouterr().err
        assert f"finishing {out} first" in err and f"interrupted; {out} was written first" in err
        got = video.read(out)[0]
        assert np.array_equal(got, whole) if out.suffix != ".gif" else len(got) == len(whole)  # (a palette's)
        assert not video.partial_path(out).exists()
    monkeypatch.setattr(video.VideoWriter, "close", close)
    # a run stopped at frame 5 keeps 4; starting over and stopped at frame 2 keeps those 4, not its 1
    out = tmp_path / "o"
    monkeypatch.setattr(video, "host_frame", _stopping_at(5, real))
    assert main([*args, "-o", str(out)]) == 130
    monkeypatch.setattr(video, "host_frame", _stopping_at(2, real))
    capsys.readouterr()
    assert main([*args, "-o", str(out)]) == 130
    assert "keeps the 4 frames of the earlier stopped run (this run, started over, had 1)" in capsys.readouterr().err
    assert len(video.read(video.partial_path(out))[0]) == 4
    monkeypatch.setattr(video, "host_frame", real)
    # the defaults given as options are the same run; another seed is named with its values
    assert main([*args, "-o", str(out), "--resume", "--seed", "3"]) == 2
    assert "other patchmatch (seed 0 -> 3)" in capsys.readouterr().err
    (video.partial_path(out) / "00002.png").rename(tmp_path / "aside.png")
    assert main([*args, "-o", str(out), "--resume"]) == 2
    assert "lacks 00002.png, and its frames are taken in order" in capsys.readouterr().err
    (tmp_path / "aside.png").rename(video.partial_path(out) / "00002.png")
    assert main([*args, "-o", str(out), "--resume", "--seed", "0", "--error-sigma", "0.05"]) == 0
    assert np.array_equal(video.read(out)[0], whole)
    # a GIF whose writing fails at the end (a full disk): its frames are kept, and --resume finishes it
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video, "_write_gif", full)
    gif = tmp_path / "g.gif"
    assert main([*args, "-o", str(gif)]) == 2
    assert "--resume does the rest" in capsys.readouterr().err
    assert len(video.read(video.partial_path(gif))[0]) == len(whole)
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="flickerless"):  # every frame was kept: said so, not "frames 6-5"
        assert main([*args, "-o", str(gif), "--resume"]) == 0
    assert f"6 frames taken from {video.partial_path(gif)}, every frame (none to compute)" in caplog.text
    assert "s/frame" not in caplog.text and f"(every frame taken from {video.partial_path(gif)})" in caplog.text
    assert np.array_equal(video.read(gif)[0], video.read(tmp_path / "f.gif")[0])
    assert not video.partial_path(gif).exists()


def test_resume_refuses_another_crf_or_codec(clips, tmp_path, monkeypatch, capsys):
    """The kept frames of a video are copied as they were encoded: a --resume with another --crf or
    --codec (a stop at --crf 35 resumed as lossless ffv1) gave an output whose first frames were at the
    old quality, exit 0. It is refused, naming what differs."""
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS, "-o", str(tmp_path / "o.mkv")]
    monkeypatch.setattr(video, "host_frame", _stopping_at(4, video.host_frame))
    assert main([*args, "--crf", "35"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*args, "--resume", "--codec", "ffv1"]) == 2
    assert "other codec (h264 -> ffv1), crf (35 -> None)" in capsys.readouterr().err
    assert main([*args, "--resume", "--crf", "10"]) == 2
    assert "other crf (35 -> 10)" in capsys.readouterr().err
    assert main([*args, "--resume", "--crf", "35"]) == 0
    assert video.probe(tmp_path / "o.mkv").frames == 6


def test_a_lossy_video_resumes_with_its_kept_frames_as_they_were_encoded(clips, tmp_path, monkeypatch, caplog):
    """Each --resume decoded a lossy video's kept frames and encoded them again: a generation of loss
    for every stop (about 0.8 dB each at --crf 17; four stops cost the first frames 3 dB). Their packets
    are now copied: stopped twice, the first frames come out as the first stop kept them, bit for bit."""
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS, "--crf", "30"]
    real = video.host_frame
    kept = []
    for k, resume in ((3, []), (3, ["--resume"])):  # stopped twice: 2 frames kept, then 4
        monkeypatch.setattr(video, "host_frame", _stopping_at(k, real))
        assert main([*args, "-o", str(tmp_path / "o.mp4"), *resume]) == 130
        kept.append(video.read(tmp_path / "o.partial.mp4")[0])
    monkeypatch.setattr(video, "host_frame", real)
    assert [len(f) for f in kept] == [2, 4]
    with caplog.at_level("INFO", logger="flickerless"):
        assert main([*args, "-o", str(tmp_path / "o.mp4"), "--resume"]) == 0
    assert "4 frames taken from" in caplog.text and "as they were encoded" in caplog.text
    out = video.read(tmp_path / "o.mp4")[0]
    assert len(out) == 6 and np.array_equal(out[:2], kept[0][:2]) and np.array_equal(out[:4], kept[1])


def test_an_odd_sized_video_output_resumes(clips, tmp_path, monkeypatch, capsys):
    """A PNG folder 81x65 written as mp4: 4:2:0 repeats its last row and column, and the kept frames were
    read back 82x66, so --resume failed at the first computed frame ("frame 3 is 81x65, the first was
    82x66"). Copied as encoded, or (where they cannot be) decoded and cropped, they now resume."""
    frames = video.read(clips / "guide.mp4")[0][:, :65, :79]
    flick = video.read(clips / "style.mp4")[0][:, :65, :79]
    video.write(tmp_path / "g", frames)
    video.write(tmp_path / "s", flick)
    args = ["deflicker", "--guide", str(tmp_path / "g"), "--style", str(tmp_path / "s"), "--device", "cpu",
            *FASTARGS, "-o", str(tmp_path / "o.mp4")]
    real = video.host_frame
    for copies in (True, False):
        monkeypatch.setattr(video, "host_frame", _stopping_at(4, real))
        assert main(args) == 130
        monkeypatch.setattr(video, "host_frame", real)
        if not copies:
            monkeypatch.setattr(video.VideoWriter, "copy_from", lambda *a: False)
        assert main([*args, "--resume"]) == 0, capsys.readouterr().err
        assert video.probe(tmp_path / "o.mp4").frames == 6


def test_a_matroska_output_with_sound_resumes_as_encoded(clips, tmp_path, monkeypatch, caplog):
    """A helper's finding: with the guide's AAC sound, Matroska starts the video after the sound's priming
    (21 ms), and the kept frames' times, compared from 0, never fitted the grid: H.264, H.265, VP9,
    ProRes and FFV1 in .mkv were all decoded and encoded again at each --resume. So was ProRes in .mkv
    without sound: Matroska keeps its fourcc as the stream's header, which the encoder has not."""
    frames = video.read(clips / "guide.mp4")[0]
    _clip_with_tone(tmp_path / "g.mp4", "mp4", frames, "aac", len(frames) / 25)
    real = video.host_frame
    for codec in ("h264", "prores"):
        out = tmp_path / f"o_{codec}.mkv"
        args = ["deflicker", "--guide", str(tmp_path / "g.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
                "--codec", codec, *FASTARGS, "-o", str(out)]
        monkeypatch.setattr(video, "host_frame", _stopping_at(4, real))
        assert main(args) == 130
        kept = video.read(video.partial_path(out))[0]
        monkeypatch.setattr(video, "host_frame", real)
        caplog.clear()
        with caplog.at_level("INFO", logger="flickerless"):
            assert main([*args, "--resume"]) == 0
        assert "3 frames taken from" in caplog.text and "as they were encoded" in caplog.text, codec
        got = video.read(out)[0]
        assert len(got) == 6 and np.array_equal(got[:3], kept) and _sound(out)[0] == "aac"


def test_kept_frames_damaged_or_of_another_size_are_refused(clips, tmp_path, monkeypatch, capsys):
    """A helper's findings: a kept .mkv cut short lost a B-frame in its middle, and the frames after it
    were taken one place early (exit 0, frame 1 at 21 dB); a kept file of another size was cropped to this
    run's (the other picture's corner, exit 0); a kept .mp4 cut short said only "cannot read as a video".
    Each is now refused, saying what to do."""
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS]
    real = video.host_frame
    for name in ("o.mkv", "o.mp4"):
        out = tmp_path / name
        monkeypatch.setattr(video, "host_frame", _stopping_at(6, real))
        assert main([*args, "-o", str(out)]) == 130
        monkeypatch.setattr(video, "host_frame", real)
        partial = video.partial_path(out)
        whole = partial.read_bytes()
        partial.write_bytes(whole[:int(len(whole) * 0.85)])
        capsys.readouterr()
        assert main([*args, "-o", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        said = "readable frame" if name == "o.mkv" else "kept frames cannot be read"
        assert said in err and "run without --resume" in err, err
        assert not out.exists()
    rng = np.random.default_rng(0)
    video.write(video.partial_path(tmp_path / "o.mkv"), (rng.random((5, 96, 120, 3)) * 255).astype(np.uint8))
    record = video.partial_path(tmp_path / "o.mkv").with_name("o.partial.mkv.json")
    import json

    kept = json.loads(record.read_text())
    kept.pop("kept frames")  # (as a record from before it was kept)
    record.write_text(json.dumps(kept))
    assert main([*args, "-o", str(tmp_path / "o.mkv"), "--resume"]) == 2
    assert "holds 120x96 frames, this run writes 80x64" in capsys.readouterr().err


@pytest.mark.parametrize("name, codec, kind", [("a.mp4", None, "vfr"), ("a.mkv", "h265", ""), ("a.webm", None, "alpha"),
                                               ("a.mov", "prores", "alpha"), ("a.mkv", "ffv1", "")])
def test_a_writer_continues_a_kept_videos_packets(tmp_path, name, codec, kind):
    """VideoWriter.copy_from takes a video an earlier writer of the same settings wrote as it was
    encoded: its frames decode exactly as they did, at their times (a variable rate's too: Matroska's
    milliseconds round back to them), with their alpha, and the frames written after it follow."""
    rng = np.random.default_rng(0)
    coarse = (rng.random((4, 8, 4 if kind == "alpha" else 3)) * 255).astype(np.uint8)
    base = video.resize_frame(coarse, (33, 66))  # smooth: what 4:2:0 keeps, so the frames after can be checked
    frames = [np.roll(base, 2 * i, axis=1) for i in range(9)]
    times = np.cumsum(np.r_[0, rng.random(9) * 0.06 + 0.01]) if kind == "vfr" else None
    opts = dict(fps=30, codec=codec, crf=None if codec in ("prores", "ffv1") else 20, times=times, alpha=kind == "alpha")
    w = video.VideoWriter(tmp_path / f"kept.{name}", **opts)
    for f in frames[:5]:
        w.write(f)
    w.close()
    w = video.VideoWriter(tmp_path / name, **opts)
    assert w.copy_from(tmp_path / f"kept.{name}", 5, frames[0].shape) and w.count == 5
    for f in frames[5:]:
        w.write(f)
    w.close()
    got = np.stack(list(video.iter_frames(tmp_path / name, alpha=kind == "alpha")))
    before = np.stack(list(video.iter_frames(tmp_path / f"kept.{name}", alpha=kind == "alpha")))
    assert len(got) == 9 and np.array_equal(got[:5], before)
    # the frames after it, encoded (at an odd height: the last row repeated, as the writer says)
    assert np.abs(got[5:, :33].astype(int) - np.stack(frames[5:])).mean() < 12
    if kind == "vfr":
        assert np.allclose(video.frame_times(tmp_path / name), times - times[0], atol=1e-4)


def test_a_writer_continues_a_kept_video_shorter_than_its_reordering(tmp_path):
    """x264 stores a video of one or two frames without its B-frames' decoding delay, which the new
    packets come with: copied as stored, the first new packet decoded before the last kept one, and the
    muxer refused the output as it was finished."""
    rng = np.random.default_rng(2)
    frames = [video.resize_frame((rng.random((4, 8, 3)) * 255).astype(np.uint8), (32, 64)) for _ in range(6)]
    for cut in (1, 2):
        w = video.VideoWriter(tmp_path / "kept.mp4", fps=30, crf=20)
        for f in frames[:cut]:
            w.write(f)
        w.close()
        w = video.VideoWriter(tmp_path / "o.mp4", fps=30, crf=20)
        assert w.copy_from(tmp_path / "kept.mp4", cut, frames[0].shape)
        for f in frames[cut:]:
            w.write(f)
        w.close()
        got = video.read(tmp_path / "o.mp4")[0]
        assert len(got) == 6 and np.array_equal(got[:cut], video.read(tmp_path / "kept.mp4")[0])


def test_a_writer_decodes_what_it_cannot_continue(tmp_path):
    """copy_from writes nothing where the kept packets cannot continue the stream: another codec,
    another size, more frames than asked for, or frames at other times. The caller's frames then go
    in as written, and the output is whole."""
    rng = np.random.default_rng(1)
    frames = [(rng.random((32, 48, 3)) * 255).astype(np.uint8) for _ in range(4)]
    for n, (codec, size) in enumerate(((None, (32, 48)), ("h265", (32, 48)), (None, (16, 48)))):
        w = video.VideoWriter(tmp_path / f"kept{n}.mkv", fps=25, codec=codec, crf=20)
        for f in frames[:3]:
            w.write(np.ascontiguousarray(f[:size[0], :size[1]]))
        w.close()
    cases = [("kept1.mkv", 3, 25), ("kept2.mkv", 3, 25), ("kept0.mkv", 2, 25), ("kept0.mkv", 3, 24)]
    for kept, count, fps in cases:
        w = video.VideoWriter(tmp_path / "o.mkv", fps=fps, crf=20)
        assert not w.copy_from(tmp_path / kept, count, frames[0].shape) and w.count == 0
        for f in frames:
            w.write(f)
        w.close()
        assert video.probe(tmp_path / "o.mkv").frames == 4, kept
    gif = video.VideoWriter(tmp_path / "o.gif", fps=25)  # a folder of frames is copied as frames
    assert not gif.copy_from(tmp_path / "kept0.mkv", 3, frames[0].shape)
    gif.abort()
    # the same settings and stream header (a variable rate's 90 kHz clock), the frames at other times
    times = np.array([0, 0.04, 0.08, 0.12, 0.16])
    w = video.VideoWriter(tmp_path / "kept_vfr.mp4", crf=20, times=times)
    for f in frames[:3]:
        w.write(f)
    w.close()
    w = video.VideoWriter(tmp_path / "o.mp4", crf=20, times=np.array([0, 0.04, 0.1, 0.12, 0.16]))
    assert not w.copy_from(tmp_path / "kept_vfr.mp4", 3, frames[0].shape) and w.count == 0
    w.abort()


def test_stream_headers_compare_by_their_units():
    """An encoder gives H.264's parameter sets with start codes, an MP4 file stores them as an avcC
    record: the same header either way, whatever SEI the encoder adds (x265's names the machine's CPU),
    and another parameter set is another header."""
    from flickerless.video import _header_units

    sps, pps, sei = b"\x67\x64\x00\x0a\xac\xd9", b"\x68\xeb\xe0", b"\x06\x05\x10cpuid=1"
    annex_b = b"\0\0\0\1" + sps + b"\0\0\1" + pps + b"\0\0\0\1" + sei
    avcc = bytes([1, 0x64, 0, 0x0A, 0xFF, 0xE1, 0, len(sps)]) + sps + bytes([1, 0, len(pps)]) + pps
    assert _header_units(annex_b, "h264") == _header_units(avcc, "h264") == tuple(sorted((sps, pps)))
    other = avcc.replace(sps, sps[:-1] + b"\xda")
    assert _header_units(other, "h264") != _header_units(annex_b, "h264")
    assert _header_units(b"abc", "ffv1") == b"abc" and _header_units(None, "vp9") == b""


def test_an_ffv1_output_resumes_exactly(clips, tmp_path, monkeypatch):
    """With --codec ffv1 (lossless) a resumed run's frames come out as an uninterrupted run's, as the
    README says, however many times it is stopped."""
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS, "--codec", "ffv1"]
    assert main([*args, "-o", str(tmp_path / "whole.mkv")]) == 0
    real = video.host_frame
    for k, resume in ((3, []), (3, ["--resume"])):  # stopped twice: 2 frames kept, then 4
        monkeypatch.setattr(video, "host_frame", _stopping_at(k, real))
        assert main([*args, "-o", str(tmp_path / "o.mkv"), *resume]) == 130
    monkeypatch.setattr(video, "host_frame", real)
    assert video.probe(tmp_path / "o.partial.mkv").frames == 4
    assert main([*args, "-o", str(tmp_path / "o.mkv"), "--resume"]) == 0
    assert np.array_equal(video.read(tmp_path / "o.mkv")[0], video.read(tmp_path / "whole.mkv")[0])


def test_a_second_run_of_the_same_output_is_refused(clips, tmp_path, monkeypatch, capsys):
    """Two runs of one output at once (a --resume and a start-over) mixed each other's frames into the
    output, exit 0, and one deleted the frames the other had said it kept. The output is locked for a
    run's length: a second run is refused at once, naming the first by its pid."""
    import os

    out = tmp_path / "o"
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS, "-o", str(out)]
    monkeypatch.setattr(video, "host_frame", _stopping_at(4, video.host_frame))
    assert main(args) == 130
    monkeypatch.undo()
    with video.OutputLock(out):  # the first run, at work
        capsys.readouterr()
        assert main([*args, "--window", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"another flickerless run (pid {os.getpid()}) is writing it" in err and len(err.splitlines()) == 1
        assert len(video.read(video.partial_path(out))[0]) == 3  # its kept frames untouched
        assert main([*args, "-o", str(tmp_path / "other")]) == 0  # another output is not held up
    assert main([*args, "--resume"]) == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")]


def test_an_output_whose_name_leaves_no_room_for_its_lock_is_still_locked(tmp_path):
    """A valid name of 250 bytes has no room for ``.NAME.lock`` (256): the lock file could not be made, a
    deflicker ran unlocked and ``run`` stopped with "File name too long: .NAME.job.lock". The lock's name
    is cut as temporary names are, the same for every run of the output."""
    from flickerless.pipelines.job import _job_lock

    for out in (tmp_path / ("n" * 246 + ".mp4"), tmp_path / ("j" * 246 + ".job")):
        lock = _job_lock(out) if out.suffix == ".job" else video.OutputLock(out)
        with lock:
            assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")] == [lock.path.name]
            again = _job_lock(out) if out.suffix == ".job" else video.OutputLock(out)
            with pytest.raises(OutputError, match=r"another (flickerless run|run of this output) \(pid \d+\)"):
                again.__enter__()
        assert not list(tmp_path.iterdir())  # removed as the run ends


def test_output_locks_and_paths_that_a_review_broke(tmp_path, carphone, monkeypatch):
    """From the review of the output lock and of absolute paths for FFmpeg: a link planted at the lock's
    name had its target overwritten with the pid; two long names alike at their start shared a lock (one
    run refused for the other's); an output given through a link was not locked against a run on its
    target; ``link/../clip.mp4`` read the clip beside the link, not beside its target (the path was
    normalised by spelling); and ``--json /dev/stdout`` into a pipe was taken for a file not there yet."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".o.mp4.lock").symlink_to(victim)
    with video.OutputLock(tmp_path / "o.mp4"):
        pass
    assert victim.read_text() == "precious"
    a, b = tmp_path / ("A" * 246 + ".mp4"), tmp_path / ("A" * 246 + ".mkv")
    with video.OutputLock(a), video.OutputLock(b):  # two outputs: both run
        pass
    target, link = tmp_path / "t.mp4", tmp_path / "l.mp4"
    link.symlink_to(target)
    with video.OutputLock(target), pytest.raises(OutputError, match="another flickerless run"):
        video.OutputLock(link).__enter__()
    (tmp_path / "real" / "sub").mkdir(parents=True)
    write_h264(tmp_path / "real" / "clip.mp4", carphone[:3])
    write_h264(tmp_path / "clip.mp4", carphone[:5, :64, :64])
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    monkeypatch.chdir(tmp_path)
    assert video.probe("link/../clip.mp4").frames == 3  # as the OS reads it: real/clip.mp4
    (tmp_path / "out.json").symlink_to("pipe:[4026]")  # /dev/stdout into a pipe, as /proc shows it
    with pytest.raises(OutputError, match="is a pipe, not a file"):
        video.check_not_special(tmp_path / "out.json")


def test_a_style_for_a_later_stretch_is_told_to_cut_the_guide(tmp_path, carphone, capsys):
    """A 4-frame style made for guide frames 3-6, given with --frames 3:7: refused with the advice to add
    --frames 0:4, which pairs the wrong frames; it is told the style is read by the guide's numbers."""
    guide, style = tmp_path / "g.mp4", tmp_path / "s.mp4"
    write_h264(guide, carphone[:8])
    write_h264(style, carphone[3:7])
    assert main(["deflicker", "--guide", str(guide), "--style", str(style), "-o", str(tmp_path / "o.mp4"),
                 "--frames", "3:7"]) == 2
    err = capsys.readouterr().err
    assert "is read by the guide's frame numbers, from 0, and has 4 frames; a style made for frames 3-6 alone needs " \
        "the guide cut to them first" in err and "--frames 0:" not in err


def test_a_record_kept_before_codec_and_crf_were_recorded_resumes(tmp_path):
    """A stop kept by the version before codec and crf were recorded was refused after the update
    ("other codec (None -> h264)") for the same command; an unreadable record makes a start-over say that
    --resume cannot take the frames (it said "--resume continues that run")."""
    from flickerless.cli import _differing, _made_with_other

    now = {"mode": "table", "codec": "h264", "crf": 17}
    assert _differing({"mode": "table"}, now) == []
    assert _differing({"mode": "table", "codec": "ffv1", "crf": None}, now) == ["codec", "crf"]
    assert _differing({"mode": "window"}, now) == ["mode"]
    record = tmp_path / "r.json"
    record.write_text("{cut sho")
    assert _made_with_other(record, now) is None
    record.write_text('{"mode": "table"}')
    assert _made_with_other(record, now) == ""


def test_a_start_over_says_which_settings_made_the_kept_frames(clips, tmp_path, monkeypatch, capsys):
    """A start-over with another --window said "add --resume to use them" of the kept frames, and once
    stopped "--resume continues that run": both were then refused ("made with other window"). It says
    what made them instead."""
    real = video.host_frame
    out = tmp_path / "o"
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--mode", "window", *FASTARGS, "-o", str(out)]
    monkeypatch.setattr(video, "host_frame", _stopping_at(5, real))
    assert main([*args, "--window", "2"]) == 130
    monkeypatch.setattr(video, "host_frame", _stopping_at(2, real))
    capsys.readouterr()
    assert main([*args, "--window", "3"]) == 130
    err = capsys.readouterr().err
    assert "add --resume" not in err and "had 1); --resume continues that run" not in err
    assert err.count("they were made with other window (2 -> 3)") == 2
    monkeypatch.setattr(video, "host_frame", real)
    assert main([*args, "--window", "3", "--resume"]) == 2  # as said
    assert main([*args, "--window", "2", "--resume"]) == 0


def test_a_finished_output_that_cannot_be_moved_stays_where_it_is_said(tmp_path, carphone, monkeypatch):
    """close said "the finished output is kept in .NAME.xxxx.mp4: move it there yourself", then the
    command's keep_partial closed it again ("no frames were written") and its abort deleted that file."""
    import os as _os

    out = tmp_path / "a.mp4"
    real = _os.replace

    def refused(src, dst):
        if Path(dst) == out:
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    w = video.VideoWriter(out, 25)
    for f in carphone[:3]:
        w.write(f)
    monkeypatch.setattr(video.os, "replace", refused)
    with pytest.raises(OutputError, match="the finished output is kept in") as e:
        w.close()
    kept = Path(re.search(r"kept in (\S+): move it", str(e.value)).group(1))
    assert w.keep_partial() is None
    w.abort()
    assert kept.exists() and len(video.read(kept)[0]) == 3


def test_a_stop_of_several_devices_keeps_the_first_ranges_frames_only(tmp_path, monkeypatch):
    """Stopped while its ranges were at work, a run on two devices kept the second range's frames straight
    after the first range's few (a signal landing in Thread.join marked the busy first range as ended):
    a gap that --resume filled with the wrong frames, exit 0. Each range now says itself when it ends."""
    import os
    import signal
    import threading
    import time

    import flickerless.cli as cli

    def part(args, job, device, a, b, emit, progress):
        for i in range(a, b):
            emit(np.full((4, 4, 3), i, np.uint8))
            time.sleep(0.05 if a == 0 else 0)  # the first range is slow, the second done at once

    monkeypatch.setattr(cli, "_deflicker_part", part)
    written = []

    class Writer:
        def write(self, frame):
            written.append(int(frame[0, 0, 0]))

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        cli._deflicker_parallel(None, {"tmp": str(tmp_path)}, ["cpu", "cpu"], [(0, 100), (100, 120)], Writer(), True)
    timer.join()
    assert written and written == list(range(len(written))) and len(written) < 100  # in order, none of the second's


def test_a_crf_the_output_has_no_use_for_is_said(clips, tmp_path, capsys):
    """--crf was ignored without a word for a GIF, ProRes, FFV1 or a folder of PNGs."""
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "g.gif"), "--crf", "30"]) == 0
    assert "--crf: gif output has no such quality setting" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "v.mp4"), "--crf", "30"]) == 0
    assert "--crf" not in capsys.readouterr().err


def test_outputs_a_killed_run_left_are_said(clips, tmp_path, capsys):
    """A run killed outright (SIGKILL, the out-of-memory killer) leaves its hidden unfinished output:
    they piled up, a run at a time, without a word. One being written (recent) is another run's."""
    import os
    import time

    old = time.time() - 3600
    dead_mp4 = tmp_path / ".o.k3x_9a2b.mp4"
    dead_mp4.write_bytes(b"")
    frames = tmp_path / ".f.abcd1234"
    frames.mkdir()
    (frames / "00000.png").write_bytes(b"")
    for p in (dead_mp4, frames, frames / "00000.png"):
        os.utime(p, (old, old))
    (tmp_path / ".o.live0000.mp4").write_bytes(b"")  # written to now
    (tmp_path / ".other.abcd1234.mp4").write_bytes(b"")  # another output's
    os.utime(tmp_path / ".other.abcd1234.mp4", (old, old))
    assert video.stale_outputs(tmp_path / "o.mp4") == [dead_mp4]
    assert video.stale_outputs(tmp_path / "f") == [frames]
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "o.mp4")]) == 0
    err = capsys.readouterr().err
    assert "1 unfinished output left by a run that was killed" in err and ".o.k3x_9a2b.mp4" in err
    assert ".o.live0000.mp4" not in err and dead_mp4.exists()  # said, not deleted
    # the record a killed run wrote as it started (deflicker's, for a stop)
    for out, spare in (("o.mp4", ".o.partial.mp4.json.next"), ("f", ".f.partial.json.next")):
        (tmp_path / spare).write_text("{}")
        os.utime(tmp_path / spare, (old, old))
        assert tmp_path / spare in video.stale_outputs(tmp_path / out)


def test_a_range_finds_the_cuts_the_whole_clip_has(tmp_path, capsys):
    """Cuts were found on the frames a range reads alone: keyframes mode's stretch between two
    keyframes (or a --frames range, a resumed run, one device's part) judged a change at its edge
    without the changes past it, found a cut the whole clip does not have, and gave other frames."""
    from PIL import Image

    rng = np.random.default_rng(1)
    texture = rng.uniform(-0.15, 0.15, (9, 16, 3)).repeat(8, 0).repeat(8, 1)
    # brightness stepping every frame, a smaller step either side of one large one (a flash, not a cut)
    steps = [0.05] * 23
    steps[10], steps[11], steps[12] = 0.01, 0.2, 0.01
    level, sign = [0.3], 1
    for k, step in enumerate(steps):
        level.append(level[-1] + (step if k == 11 else sign * step))
        sign = sign if k == 11 else -sign
    guide, keys = tmp_path / "g", tmp_path / "k"
    guide.mkdir()
    keys.mkdir()
    for t in range(24):
        frame = np.clip(texture + level[t], 0, 1)
        Image.fromarray((frame * 255).round().astype(np.uint8)).save(guide / f"{t:04d}.png")
        if t in (0, 10, 13, 23):  # keyframes painted apart: 10 reddish, 13 bluish
            tint = {10: (1, 0.4, 0.4), 13: (0.4, 0.4, 1)}.get(t, (1, 1, 1))
            Image.fromarray(((1 - frame) * tint * 255).round().astype(np.uint8)).save(keys / f"{t:04d}.png")
    args = ["deflicker", "--guide", str(guide), "--keyframes", str(keys), "--quality", "draft", "--error-sigma", "0",
            "--device", "cpu", "-q"]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    assert main([*args, "-o", str(tmp_path / "part"), "--frames", "11:13"]) == 0
    assert np.array_equal(video.read(tmp_path / "part")[0], video.read(tmp_path / "whole")[0][11:13])


def test_resume_refuses_inputs_changed_since_the_stop(clips, tmp_path, monkeypatch, capsys):
    """The EbSynth loop: stop, fix a keyframe, run again with --resume. The kept frames were made from
    the old keyframe, so the changed folder (or a style re-rendered at the same path) is refused."""
    from PIL import Image

    style = video.read(clips / "style.mp4")[0]
    keys = tmp_path / "keys"
    keys.mkdir()
    for i in (0, 5):
        Image.fromarray(style[i]).save(keys / f"{i}.png")

    def stopped_at_the_fourth_frame(args):
        monkeypatch.setattr(video, "host_frame", _stopping_at(4, video.host_frame))
        assert main(args) == 130
        monkeypatch.undo()
        capsys.readouterr()

    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--keyframes", str(keys), "--device", "cpu", *FASTARGS,
            "-o", str(tmp_path / "o")]
    stopped_at_the_fourth_frame(args)
    Image.fromarray(255 - style[5]).save(keys / "5.png")  # the keyframe fixed
    assert main([*args, "--resume"]) == 2
    assert "other keyframe files (changed since the stop)" in capsys.readouterr().err
    Image.fromarray(style[3]).save(keys / "3.png")  # or one added
    assert main([*args, "--resume"]) == 2
    (keys / "3.png").unlink()
    # a style re-rendered at the same path
    restyled = tmp_path / "style.mp4"
    video.write(restyled, style)
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(restyled), "--device", "cpu", *FASTARGS,
            "-o", str(tmp_path / "s")]
    stopped_at_the_fourth_frame(args)
    video.write(restyled, 255 - style)
    assert main([*args, "--resume"]) == 2
    assert "other style files (changed since the stop)" in capsys.readouterr().err


def test_resume_after_a_damaged_style_frame_is_fixed(carphone, tmp_path, monkeypatch, capsys):
    """A style folder with a half-written frame stops a streamed run, which keeps the frames done and says
    --resume does the rest; but fixing the frame (the only way on) made --resume refuse the changed
    folder. A fix to a frame the kept ones never read is taken; a change to one they blend is not."""
    from PIL import Image

    clip = np.ascontiguousarray(carphone[:, 40:88, 48:112])
    _, flick = flickering_pair(clip)
    video.write(tmp_path / "g.mp4", clip, 25)
    style = tmp_path / "style"
    video.write(style, flick)
    good = (style / "00009.png").read_bytes()
    (style / "00009.png").write_bytes(good[: len(good) // 2])  # a render cut off
    monkeypatch.setattr(video.StreamingFrames, "CHUNK", 2)
    args = ["deflicker", "--guide", str(tmp_path / "g.mp4"), "--style", str(style), "--device", "cpu", "--stream",
            "--mode", "window", "--window", "2", "--no-cuts", *FASTARGS, "-o", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "00009.png: cannot read as an image" in err and "--resume does the rest" in err
    kept = len(video.read(tmp_path / "o.partial")[0])
    assert 0 < kept <= 7  # frame 7 blends frame 9
    (style / "00009.png").write_bytes(good)
    assert main([*args, "--resume"]) == 0
    assert main([*args[:-1], str(tmp_path / "whole")]) == 0
    assert np.array_equal(video.read(tmp_path / "o")[0], video.read(tmp_path / "whole")[0])
    # a change to a frame the kept ones blend is refused, named
    (style / "00009.png").write_bytes(good[: len(good) // 2])
    args[-1] = str(tmp_path / "p")
    assert main(args) == 2
    (style / "00009.png").write_bytes(good)
    Image.fromarray(255 - flick[1]).save(style / "00001.png")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume: style frame 1 (00001.png) changed since the stop (its size or modification time: a copy put back counts too), and the frames kept in" in err
    assert re.search(r"\(up to (\d) \(0000\1\.png\)\) blend it", err), err  # the file, as frame 1 is said
    # another count of images than at the stop (frames renumbered) says the folder changed, as a whole
    import json

    record = tmp_path / "p.partial.json"
    kept_settings = json.loads(record.read_text())
    kept_settings["style frames"] = kept_settings["style frames"][:-1]
    record.write_text(json.dumps(kept_settings))
    Image.fromarray(flick[1]).save(style / "00001.png")
    assert main([*args, "--resume"]) == 2
    assert "made with other style files (changed since the stop)" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="POSIX signals")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_cli_stopped_by_a_signal_keeps_the_frames_done_and_resumes(clips, tmp_path, monkeypatch, capsys, name):
    """SIGTERM (a scheduler's time limit, ``docker stop``) and SIGHUP (the terminal closed) end Python at
    once by default, leaving a hidden temporary file and none of the frames done. A run they stop keeps
    its frames as Ctrl-C does, says so, exits 128 + the signal's number as a shell expects, and resumes;
    the process's own handlers are back once the command returns."""
    import signal

    sig = getattr(signal, name)
    real = video.host_frame
    calls = [0]

    def host_frame(img):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), sig)  # a real signal, delivered to this (the main) thread
        return real(img)

    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    monkeypatch.setattr(video, "host_frame", host_frame)
    assert main([*args, "-o", str(tmp_path / "o")]) == 128 + sig
    err = capsys.readouterr().err
    assert f"stopped by {name}" in err and "are kept in" in err and "--resume" in err
    assert {s: signal.getsignal(s) for s in before} == before
    kept = video.read(tmp_path / "o.partial")[0]
    assert 3 <= len(kept) < 6 and sorted(os.listdir(tmp_path)) == ["o.partial", "o.partial.json", "whole"]
    monkeypatch.setattr(video, "host_frame", real)
    assert main([*args, "-o", str(tmp_path / "o"), "--resume"]) == 0
    assert np.array_equal(video.read(tmp_path / "o")[0], video.read(tmp_path / "whole")[0])


def test_stop_signals_leave_a_handler_set_elsewhere_alone():
    """Under ``nohup`` SIGHUP is ignored, and a program that runs the CLI's main() may handle SIGTERM
    itself: neither is replaced while a command runs."""
    import signal

    from flickerless.cli import _stop_signals_as_interrupts

    def own(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, own), signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with _stop_signals_as_interrupts():
            assert signal.getsignal(signal.SIGTERM) is own and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGHUP, old[1])


def test_cli_style_for_part_of_the_clip(clips, tmp_path, capsys):
    """A style made for the first 4 of 6 frames: refused with the --frames that uses it, and used with it
    (the neighbours read stop where the style does)."""
    base = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "short.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", *FASTARGS]
    assert main([*base, "-o", str(tmp_path / "a")]) == 2
    assert "add --frames 0:4" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "b"), "--frames", "1:5"]) == 2  # past the style's end
    assert main([*base, "-o", str(tmp_path / "c"), "--frames", "0:4"]) == 0
    guide = video.read(clips / "guide.mp4")[0][:4]
    video.write(tmp_path / "g4", guide)  # the same 4 frames, losslessly
    assert main([*base[:2], str(tmp_path / "g4"), *base[3:], "-o", str(tmp_path / "d")]) == 0
    assert np.array_equal(video.read(tmp_path / "c")[0], video.read(tmp_path / "d")[0])


def test_cli_several_devices_split_the_clip(clips, tmp_path, monkeypatch, capsys):
    """--device A,B: the clip in two ranges done at once, the same frames as one device (window mode);
    a range that fails keeps the frames done in order before it, and --resume finishes the run."""
    import flickerless.cli as cli
    from flickerless.errors import DeviceError

    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"),
            "--mode", "window", "--window", "2", *FASTARGS]
    assert main([*args, "--device", "cpu", "-o", str(tmp_path / "one")]) == 0
    assert main([*args, "--device", "cpu,cpu", "-o", str(tmp_path / "two")]) == 0
    one = video.read(tmp_path / "one")[0]
    assert np.array_equal(video.read(tmp_path / "two")[0], one)
    real = cli._deflicker_part

    def second_fails(a, job, device, lo, hi, emit, progress):
        if lo > 0:
            raise DeviceError("out of GPU memory (as if)")
        return real(a, job, device, lo, hi, emit, progress)

    monkeypatch.setattr(cli, "_deflicker_part", second_fails)
    out = tmp_path / "o"
    assert main([*args, "--device", "cpu,cpu", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "out of GPU memory (as if)" in err and "frames 0-2" in err
    assert np.array_equal(video.read(tmp_path / "o.partial")[0], one[:3])
    monkeypatch.setattr(cli, "_deflicker_part", real)
    assert main([*args, "--device", "cpu,cpu", "-o", str(out), "--resume"]) == 0
    assert np.array_equal(video.read(out)[0], one)


def test_iter_frames_range_reads_only_what_it_returns(tmp_path, carphone):
    from PIL import Image

    clip = carphone[:6]
    video.write(tmp_path / "c.mp4", clip, 10)
    whole = list(video.iter_frames(tmp_path / "c.mp4"))
    assert all(np.array_equal(a, b) for a, b in zip(video.iter_frames(tmp_path / "c.mp4", 2, 4), whole[2:4]))
    assert len(list(video.iter_frames(tmp_path / "c.mp4", 2, 4))) == 2
    folder = tmp_path / "f"
    folder.mkdir()
    for i, f in enumerate(clip):
        Image.fromarray(f).save(folder / f"{i}.png")
    frames, info = video.open_frames(folder, start=4)
    assert info.frames == 2 and np.array_equal(frames[1], clip[5])
    (folder / "0.png").write_bytes(b"broken")  # not loaded when the range starts after it
    assert [int(f[0, 0, 0]) for f in video.iter_frames(folder, 1, 3)] == [int(f[0, 0, 0]) for f in clip[1:3]]


def test_guide_and_style_are_read_at_once_and_a_failure_leaves_nothing(tmp_path, carphone):
    """The command line decodes the guide and the style at the same time (``_open_both``). When either
    read fails, or is interrupted, the other stops at its next frame, both are closed, and no spilled
    frames are left on disk; the error is the one that happened."""
    import threading

    from flickerless.cli import _open_both

    clip = carphone[:8]
    video.write(tmp_path / "c.mp4", clip, 10)
    spill = tmp_path / "spill"
    spill.mkdir()

    def on_disk(cancel=None):  # memory_limit 0: every clip goes to a DiskFrames file in ``spill``
        return video.open_frames(tmp_path / "c.mp4", memory_limit=0, tmpdir=str(spill), cancel=cancel)[0]

    a, b = _open_both(on_disk, on_disk)
    assert len(a) == len(b) == 8 and np.array_equal(a[7], b[7])
    a.close(), b.close()
    assert not list(spill.iterdir())

    started = threading.Event()
    read = []

    def slow(cancel):  # a long read (2000 frames) that is to be stopped early
        def frames():
            for _ in range(2000):
                started.set()
                read.append(1)
                yield clip[0]
        return video.DiskFrames(video._until(frames(), cancel), tmpdir=str(spill))

    def fails():
        if not started.wait(5):
            raise AssertionError("the style is not read while the guide is")
        raise InputError("the guide is broken")

    with pytest.raises(InputError, match="the guide is broken"):
        _open_both(fails, slow)
    assert not list(spill.iterdir()) and len(read) < 2000  # stopped, and its spill file removed

    def second_fails(cancel):
        raise InputError("the style is broken")

    with pytest.raises(InputError, match="the style is broken"):
        _open_both(on_disk, second_fails)
    assert not list(spill.iterdir())

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(video.ReadCancelled):
        on_disk(cancel)
    assert not list(spill.iterdir())


def test_frames_read_into_memory_fill_one_array_whatever_the_container_said(carphone):
    """A clip read into memory fills one array made up front from the container's frame count (no
    second copy while stacking); a container that said too many or too few frames still gives every
    frame decoded, in order."""
    clip = carphone[:5]
    for said in (5, 3, 8):
        arr = video._fill(iter(clip), (said, *clip.shape[1:]))
        assert arr.shape == clip.shape and np.array_equal(arr, clip)


def test_info_says_what_is_read_from_each_clip(tmp_path, carphone, capsys):
    """`flickerless info` shows the facts behind most surprises before any work: frames, rate, size as
    shown (a portrait phone clip turned upright), codec and bit depth, HDR, alpha, sound, how it is held;
    --json gives the same as values; a missing clip is one line and exit code 2."""
    import json

    from PIL import Image

    clip = tmp_path / "clip.mp4"
    write_h264(clip, carphone[:6], fps=Fraction(25, 2))
    hdr = tmp_path / "hlg.mkv"
    write_hdr(hdr, np.stack([_card(64, 96)] * 2))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (10, 2):
        a = np.dstack([carphone[0], np.full(carphone.shape[1:3], 255, np.uint8)])
        a[:4, :4, 3] = 0
        Image.fromarray(a, "RGBA").save(folder / f"{i}.png")
    assert main(["info", str(clip), str(hdr), str(folder)]) == 0
    out = capsys.readouterr().out
    assert "frames      6 (0.48 s, 12.5 fps)" in out and "size        176x144" in out
    assert "video       h264, yuv420p, 8-bit" in out and "sound       none" in out
    assert "video       hevc, yuv420p10le, 10-bit" in out and "colour      HDR: HLG, BT.2020" in out
    assert "images      png, in natural order: 2.png ... 10.png" in out and "alpha       yes: deflicker blends it" in out
    assert "0.152 MB uncompressed: held in RAM" in out
    # two clips: whether they agree as a guide and its style, and the option that makes them work
    short = tmp_path / "short.mp4"
    write_h264(short, carphone[:5])
    assert main(["info", str(clip), str(short)]) == 0
    out = capsys.readouterr().out
    assert "frames      differ (6 and 5): deflicker refuses them; if the two start at the same frame, add " \
        "--frames 0:5" in out and "their rates differ too (12.5 and 25 fps)" in out
    # the same length at twice the rate: frame k of one is not frame k of the other, and --frames 0:6 paired
    # them wrongly; the rates are said instead
    double = tmp_path / "double.mp4"
    write_h264(double, carphone[np.arange(12) % len(carphone)], fps=25)
    assert main(["info", str(clip), str(double)]) == 0
    out = capsys.readouterr().out
    assert "differ (6 and 12): deflicker refuses them; they last as long at different rates (12.5 and 25 fps)" in out
    assert "--frames" not in out
    assert main(["deflicker", "--guide", str(clip), "--style", str(double), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert "they last as long at different rates (12.5 and 25 fps), so frame k of one is not" in err
    assert "ffmpeg -i STYLE -r 25/2 OUT" in err  # exact: -r 29.97 would be 2997/100, not NTSC's 30000/1001
    assert "size        match (176x144)" in out
    assert main(["info", str(clip), str(hdr)]) == 0
    assert "size        differ (176x144 and 96x64): add --resize" in capsys.readouterr().out
    assert main(["info", "--json", str(clip), str(folder)]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (got[0]["frames"], got[0]["fps"], got[0]["codec"], got[0]["alpha"]) == (6, 12.5, "h264", False)
    assert (got[1]["kind"], got[1]["frames"], got[1]["alpha"], got[1]["first"]) == ("images", 2, True, "2.png")
    # and the pair, as the lines say it (--json had left it out)
    assert (got[2]["kind"], got[2]["frames_match"], got[2]["size_match"]) == ("pair", False, True)
    assert got[2]["advice"][0].startswith("frames      differ (6 and 2)")
    assert main(["info", str(tmp_path / "nope.mp4")]) == 2
    assert capsys.readouterr().err.strip().endswith("nope.mp4: no such file or folder")


def _h264_from(path, frames, first_pts=0, empty=()):
    """Frames as an H.264 (.mp4) or MPEG-4 (.avi) clip at 25 fps starting at ``first_pts`` (below 0:
    the muxer hides those frames with an edit list, as a ``-c copy`` trim leaves), the frames numbered in
    ``empty`` written as empty packets (a capture tool's dropped frames)."""
    import av

    with av.open(str(path), "w") as c:
        avi = str(path).endswith(".avi")
        s = c.add_stream("mpeg4" if avi else "libx264", rate=25, options={"bf": "0", **({"g": "1"} if avi else {})})
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.time_base = s.codec_context.time_base = Fraction(1, 25)
        packets = []
        for i, a in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(a, format="rgb24")
            vf.pts, vf.time_base = first_pts + i, Fraction(1, 25)
            packets += list(s.encode(vf))
        for p in packets + list(s.encode()):
            if p.pts is not None and p.pts - first_pts in empty:
                e = av.Packet(b"")
                e.pts, e.dts, e.stream, e.time_base = p.pts, p.dts, s, p.time_base
                p = e
            c.mux(p)


def test_frames_never_shown_are_not_counted(tmp_path, carphone):
    """The header's count took in frames an edit list hides (a trim), a capture's dropped (empty) frames
    and the frames a cut-short file lacks: `info` said 8 frames where every read gives 6, a streamed run
    refused the clip, and a dropped frame's gap was lost from the output's timing."""
    clip = np.ascontiguousarray(carphone[:8, :64, :96])
    _h264_from(tmp_path / "trim.mp4", clip, first_pts=-2)
    _h264_from(tmp_path / "drop.avi", clip, empty=(3, 4))
    for name in ("trim.mp4", "drop.avi"):
        info = video.probe(tmp_path / name)
        assert info.frames == 6 == len(list(video.iter_frames(tmp_path / name))), name
    assert main(["deflicker", "--guide", str(tmp_path / "trim.mp4"), "--style", str(tmp_path / "trim.mp4"),
                 "-o", str(tmp_path / "t.mp4"), "--stream", *FASTARGS]) == 0
    assert video.probe(tmp_path / "t.mp4").frames == 6
    misses = video._read_packets.cache_info().misses
    video.probe(tmp_path / "drop.avi")
    times = video.frame_times(tmp_path / "drop.avi", 6)
    assert times is not None and np.allclose(times[:6], [0, 0.04, 0.08, 0.2, 0.24, 0.28])  # the gap is kept
    assert video._read_packets.cache_info().misses == misses  # the count and the timing share one pass
    noise = np.random.default_rng(0).integers(0, 256, (8, 64, 96, 3), dtype=np.uint8)  # large frames: the header
    _h264_from(tmp_path / "noise.avi", noise)  # stays whole in the first half
    data = (tmp_path / "noise.avi").read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    assert video.probe(tmp_path / "half.avi").frames == len(list(video.iter_frames(tmp_path / "half.avi")))


def test_info_says_what_a_run_would_stop_at_in_a_folder(tmp_path, carphone, capsys):
    """A folder of images of two sizes, or with a truncated PNG, passed `info` and stopped every run."""
    from PIL import Image

    mixed, cut, fine = tmp_path / "mixed", tmp_path / "cut", tmp_path / "fine"
    for d in (mixed, cut, fine):
        d.mkdir()
        for i in range(3):
            Image.fromarray(carphone[i]).save(d / f"{i}.png")
    Image.fromarray(carphone[3][:100]).save(mixed / "3.png")
    data = (cut / "1.png").read_bytes()
    (cut / "1.png").write_bytes(data[: len(data) // 2])
    turned = Image.fromarray(carphone[3].transpose(1, 0, 2))  # stored 144x176, shown 176x144: one size
    exif = Image.Exif()
    exif[0x0112] = 6
    turned.save(fine / "3.jpg", exif=exif)
    assert main(["info", str(mixed)]) == 2
    assert "3.png: is 176x100 but 0.png is 176x144" in capsys.readouterr().err
    assert main(["info", str(cut)]) == 2
    assert "1.png: cannot read as an image" in capsys.readouterr().err
    assert main(["info", str(fine)]) == 0 and len(video.read(fine)[0]) == 4
    # a JPEG cut short: PIL's verify reads no JPEG data, so it passed `info` and stopped the run
    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    for i in range(3):
        Image.fromarray(carphone[i]).save(jpegs / f"{i}.jpg", quality=95)
    data = (jpegs / "1.jpg").read_bytes()
    (jpegs / "1.jpg").write_bytes(data[: len(data) // 2])
    assert main(["info", str(jpegs)]) == 2
    assert "1.jpg: cannot read as an image (cut short" in capsys.readouterr().err


def test_info_tells_keyframes_given_as_a_style_from_a_short_style(tmp_path, carphone, capsys):
    """`info guide.mp4 keys/` read an EbSynth keyframe folder as a style and advised --frames 0:2."""
    from PIL import Image

    guide = tmp_path / "g.mp4"
    video.write(guide, carphone[:12])
    keys, short = tmp_path / "keys", tmp_path / "short"
    keys.mkdir()
    short.mkdir()
    for i in (0, 8):
        Image.fromarray(carphone[i]).save(keys / f"{i:04d}.png")
    for i in range(3):
        Image.fromarray(carphone[i]).save(short / f"{i:04d}.png")
    assert main(["info", str(guide), str(keys)]) == 0
    assert f"looks like keyframes named by frame number: give it as --keyframes {keys}" in capsys.readouterr().out
    assert main(["info", str(guide), str(short)]) == 0
    out = capsys.readouterr().out
    assert "add --frames 0:3 (the first 3 frames of each are paired, frame k with frame k" in out and "looks like keyframes" not in out
    # a folder of mixed names: info only guesses it is keyframes, and warned as a keyframes run would
    Image.fromarray(carphone[4]).save(keys / "final_v2.png")
    assert main(["info", str(guide), str(keys)]) == 0
    said = capsys.readouterr()
    assert "looks like keyframes" in said.out and "named unlike the other keyframes" not in said.err


def test_info_says_a_turned_and_anamorphic_clip_s_shape(tmp_path, carphone, sound_clip, capsys):
    import av

    wide = tmp_path / "wide.mp4"
    write_h264(wide, carphone[:2], sample_aspect_ratio=Fraction(16, 11))
    portrait = tmp_path / "portrait.mp4"
    video.write(tmp_path / "plain.mp4", carphone[:2], 10)
    _rotate_mp4(tmp_path / "plain.mp4", portrait, -90)  # as a phone stores portrait video
    assert main(["info", str(wide), str(sound_clip), str(portrait)]) == 0
    out = capsys.readouterr().out
    assert "pixels shown 16/11 as wide as high: 256x144 on screen" in out
    assert "size        144x176 upright (stored 176x144, a quarter turn clockwise on reading)" in out
    mirrored = tmp_path / "mirrored.mp4"
    _rotate_mp4(tmp_path / "plain.mp4", mirrored, "hflip")
    assert main(["info", str(mirrored)]) == 0
    assert "size        176x144 upright (stored 176x144, mirrored left to right on reading)" in capsys.readouterr().out
    phone = tmp_path / "phone.mp4"  # a variable frame rate: 10 fps, then 25
    write_h264(phone, carphone[:8], times=np.r_[np.arange(4) * 0.1, 0.4 + np.arange(4) * 0.04])
    assert main(["info", str(phone)]) == 0
    assert "variable: 0.04-0.1 s between frames (each frame keeps its time)" in capsys.readouterr().out
    with av.open(str(sound_clip)) as c:
        a = c.streams.audio[0].codec_context
        assert f"sound       {a.name}, {a.sample_rate} Hz" in out


@pytest.fixture(scope="module")
def cut_out(tmp_path_factory, carphone):
    """A guide (12 frames of carphone, PNGs), its flickering stylisation without and with an alpha matte
    that a per-frame segmentation would draw (its edge shaken by 1-3 px each frame), as PNG folders."""
    from PIL import Image

    from flickerless.synthetic import flickering_pair

    from .conftest import shaken_matte

    root = tmp_path_factory.mktemp("cutout")
    clip = np.ascontiguousarray(carphone[:12, 40:104, 48:128])
    _, flick = flickering_pair(clip, seed=3)
    truth, shaken = shaken_matte(clip)
    video.write(root / "guide", clip)
    video.write(root / "style", flick)
    (root / "cut").mkdir()
    for i, (f, a) in enumerate(zip(flick, shaken)):
        Image.fromarray(np.dstack([f, a]), "RGBA").save(root / "cut" / f"{i:05d}.png")
    return root, truth, shaken


def test_cli_keeps_a_style_s_transparency_where_the_output_can(cut_out, tmp_path, caplog):
    """An RGBA style: a PNG folder, ProRes 4444 (.mov) and FFV1 (.mkv) keep its alpha, blended through the
    same matches as its colour (whose frames are the RGB style's, exactly); an .mp4 cannot, and says
    which outputs can."""
    root, truth, shaken = cut_out
    args = ["deflicker", "--guide", str(root / "guide"), "--device", "cpu", *FASTARGS]
    assert main([*args, "--style", str(root / "style"), "-o", str(tmp_path / "rgb")]) == 0
    rgb = video.read(tmp_path / "rgb")[0]
    with caplog.at_level("INFO", logger="flickerless"):
        assert main([*args, "--style", str(root / "cut"), "-o", str(tmp_path / "rgba")]) == 0
    assert "transparency: the alpha is blended with the colour" in caplog.text
    assert video.probe(tmp_path / "rgba").alpha
    out = np.stack(list(video.iter_frames(tmp_path / "rgba", alpha=True)))
    assert np.array_equal(out[..., :3], rgb)
    assert temporal_error(out[..., 3:], truth[..., None]) < temporal_error(shaken[..., None], truth[..., None]) / 3
    for name, codec in (("o.mov", "prores"), ("o.mkv", "ffv1"), ("o.webm", None)):
        assert main([*args, "--style", str(root / "cut"), "-o", str(tmp_path / name),
                     *(["--codec", codec] if codec else [])]) == 0
        back = np.stack(list(video.iter_frames(tmp_path / name, alpha=True)))
        assert video.probe(tmp_path / name).alpha and back.shape == out.shape
        # VP9 with alpha (WebM) is lossy, 4:2:0 and read back through libvpx: FFmpeg's own decoder drops it
        assert np.abs(back[..., 3].astype(int) - out[..., 3]).mean() < (1.5 if codec is None else 0.5), name
        assert np.abs(back[..., :3].astype(int) - out[..., :3]).mean() < {"ffv1": 0.01, "prores": 1.5}.get(codec, 5), name
    assert not video.probe(root / "guide").alpha and not video.probe(tmp_path / "rgb").alpha
    caplog.clear()
    with caplog.at_level("WARNING", logger="flickerless"):
        assert main([*args, "--style", str(root / "cut"), "-o", str(tmp_path / "o.mp4")]) == 0
    assert "o.mp4 cannot keep the transparency of" in caplog.text and not video.probe(tmp_path / "o.mp4").alpha
    with pytest.raises(OutputError, match="cannot keep transparency"):
        video.VideoWriter(tmp_path / "x.mp4", alpha=True)
    # the cut-out as its own guide: the guide's alpha is not used, and nothing says the output has none
    caplog.clear()
    with caplog.at_level("INFO", logger="flickerless"):
        assert main([*args[:1], "--guide", str(root / "cut"), *args[3:], "--style", str(root / "cut"),
                     "-o", str(tmp_path / "both")]) == 0
    assert "the guide's transparency is not used" in caplog.text and "output has none" not in caplog.text
    assert video.probe(tmp_path / "both").alpha


def test_cli_transparency_streamed_resumed_and_in_keyframes(cut_out, tmp_path, monkeypatch):
    """The alpha goes through every path: decoded as the work goes (--stream), two ranges at once (as on
    two devices), a stopped run resumed, and keyframes with alpha (each comes back exactly at its own
    frame)."""
    root, _, _ = cut_out
    args = ["deflicker", "--guide", str(root / "guide"), "--style", str(root / "cut"), "--device", "cpu", *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    whole = np.stack(list(video.iter_frames(tmp_path / "whole", alpha=True)))
    assert main([*args, "-o", str(tmp_path / "streamed"), "--stream"]) == 0
    assert np.array_equal(np.stack(list(video.iter_frames(tmp_path / "streamed", alpha=True))), whole)
    split = [a if a != "cpu" else "cpu,cpu" for a in args]  # two ranges at once, as on two GPUs
    assert main([*split, "-o", str(tmp_path / "split")]) == 0
    assert np.array_equal(np.stack(list(video.iter_frames(tmp_path / "split", alpha=True))), whole)
    real = video.host_frame
    monkeypatch.setattr(video, "host_frame", _stopping_at(6, real))
    assert main([*args, "-o", str(tmp_path / "o")]) == 130
    monkeypatch.setattr(video, "host_frame", real)
    assert main([*args, "-o", str(tmp_path / "o"), "--resume"]) == 0
    assert np.array_equal(np.stack(list(video.iter_frames(tmp_path / "o", alpha=True))), whole)
    keys = tmp_path / "keys"
    keys.mkdir()
    for k in (0, 11):
        shutil.copy(root / "cut" / f"{k:05d}.png", keys / f"{k}.png")
    assert main(["deflicker", "--guide", str(root / "guide"), "--keyframes", str(keys), "-o", str(tmp_path / "k"),
                 "--device", "cpu", *FASTARGS]) == 0
    got = np.stack(list(video.iter_frames(tmp_path / "k", alpha=True)))
    assert np.array_equal(got[0], video.load_image(keys / "0.png", alpha=True))
    assert np.array_equal(got[11], video.load_image(keys / "11.png", alpha=True))
    # transparency in one keyframe only, not the first, middle or last (which alone were looked at): its
    # alpha was dropped without a word; every keyframe is looked at now
    from PIL import Image

    keys2 = tmp_path / "keys2"
    keys2.mkdir()
    for k in (0, 2, 4, 6, 8, 11):
        img = video.load_image(root / "cut" / f"{k:05d}.png", alpha=True).copy()
        img[..., 3] = 0 if k == 2 else 255
        Image.fromarray(img).save(keys2 / f"{k}.png")
    assert not video.image_alpha(keys2 / "0.png") and video.image_alpha(keys2 / "2.png")
    assert main(["deflicker", "--guide", str(root / "guide"), "--keyframes", str(keys2), "-o", str(tmp_path / "k2"),
                 "--device", "cpu", *FASTARGS]) == 0
    got = np.stack(list(video.iter_frames(tmp_path / "k2", alpha=True)))
    assert np.array_equal(got[2], video.load_image(keys2 / "2.png", alpha=True)) and got[2][..., 3].max() == 0


def test_help_and_info_answer_without_importing_torch():
    """`flickerless --help`, each command's --help and `flickerless info` need no torch (5 s to import on a
    GPU host): they answer at once. A fresh process, as a user runs them."""
    import subprocess
    import sys

    from flickerless.demo import registry_clip

    probe = ("import sys; from flickerless.cli import main; "
             "codes = [main(a) for a in ([['--help']] + [[c, '--help'] for c in sys.argv[2:]] + [['info', sys.argv[1]]])]; "
             "print(codes, 'torch' in sys.modules)")
    commands = ["deflicker", "run", "eval", "info", "templates", "export", "segment", "train", "demo"]
    r = subprocess.run([sys.executable, "-c", probe, str(registry_clip("carphone_pristine.mp4")), *commands],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    codes, torch_imported = r.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert codes == str([0] * (len(commands) + 2)) and torch_imported == "False", r.stdout[-500:]


@pytest.mark.parametrize("error, said", [
    (lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                    "7.7 GiB"), "CUDA out of memory;"),
    (lambda: RuntimeError("MPS backend out of memory (MPS allocated: 5.56 GB, other allocations: 1.10 GB, max allowed: "
                          "6.80 GB). Tried to allocate 768.00 MB on private pool."), "MPS backend out of memory (MPS"),
])
def test_a_device_out_of_memory_where_no_step_said_more_is_one_line(monkeypatch, capsys, error, said):
    """An out-of-memory error that no step turned into advice (Apple's MPS raises a plain RuntimeError)
    ends in one line and exit code 2, not a traceback; any other error still shows its traceback."""
    import flickerless.commands.info as info
    from flickerless.errors import out_of_memory

    def fails(args):
        raise error()

    monkeypatch.setattr(info, "cmd_info", fails)
    assert main(["info", "x.mp4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err and "--device cpu is not bound by GPU memory" in err
    assert out_of_memory(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 GiB"))
    assert not out_of_memory(RuntimeError("shape mismatch")) and not out_of_memory(ValueError("out of memory"))
    monkeypatch.setattr(info, "cmd_info", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["info", "x.mp4"])


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first moment (the commands' modules loading as the parser is built) ended in a
    KeyboardInterrupt traceback."""
    import flickerless.cli as cli

    def loading():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", loading)
    assert main(["info", "x.mp4"]) == 130
    assert capsys.readouterr().err == "flickerless: interrupted\n"


def test_video_helpers_refuse_what_they_would_misread(tmp_path, carphone):
    """From Python: float frames in [0, 1] (what deflicker returns for float input) were cast to uint8,
    black; 16-bit values wrapped around; a frame of another size became garbage; a negative fps became
    30; an empty PNG output was written; negative frame numbers meant one thing in a folder of images
    and another in a video."""
    frames = np.ascontiguousarray(carphone[:3])
    assert video.write(tmp_path / "f", frames / 255.0) == 3
    assert np.abs(video.read(tmp_path / "f")[0].astype(int) - frames).max() <= 1
    for bad, says in [(frames.astype(np.uint16) * 2, "uint16"), (frames.astype(np.float32), "range from"),
                      ([frames[0], frames[1, :64]], "frame 1 is"), ([frames[0], frames[1] * np.nan], "holding NaN")]:
        with pytest.raises(InputError, match=says):
            video.write(tmp_path / "bad.mp4", bad)
        assert not (tmp_path / "bad.mp4").exists()
    for fps in (-5, float("nan"), float("inf"), True, 2**40):  # True was 1 fps, 2**40 an encoder's OverflowError
        with pytest.raises(InputError, match="fps must be"):
            video.write(tmp_path / "bad.mp4", frames, fps=fps)
    with pytest.raises(OutputError, match="no frames"):
        video.write(tmp_path / "empty", [])
    assert not (tmp_path / "empty").exists()
    video.write(tmp_path / "clip.mp4", frames)
    for src in (tmp_path / "f", tmp_path / "clip.mp4"):
        for start, stop in [(-2, None), (0, -1)]:
            with pytest.raises(InputError, match="frame number >= 0"):
                list(video.iter_frames(src, start, stop))
        for bad in (-1, 0, 2.5, True):  # was said of "stop", which read has not (0: "no frames in 0:0")
            with pytest.raises(InputError, match=f"^max_frames must be a number of frames, at least 1 .*got {bad!r}$"):
                video.read(src, max_frames=bad)
        assert len(video.read(src, max_frames=2)[0]) == 2
        assert len(list(video.iter_frames(src, None, 2))) == 2  # a start of None is 0, as in slicing


def test_open_frames_says_a_bad_size_or_spill_folder_before_reading(tmp_path, carphone):
    """A size of 0, -5, 50 or 50.5 failed in PIL or numpy, a spill folder not there as a temporary
    file's FileNotFoundError once the frames had been read up to the memory limit."""
    video.write(tmp_path / "c.mp4", carphone[:2])
    for resize in ((0, 60), (-5, 60), 50, (50.5, 60), (True, 60), (10, 20, 3)):
        with pytest.raises(InputError, match=r"resize is \(height, width\), whole numbers of pixels >= 1"):
            video.open_frames(tmp_path / "c.mp4", resize=resize)
    with pytest.raises(InputError, match="tmpdir .*nowhere: is not a folder; give an existing folder"):
        video.open_frames(tmp_path / "c.mp4", memory_limit=0, tmpdir=tmp_path / "nowhere")
    frames, info = video.open_frames(tmp_path / "c.mp4", resize=(np.int64(24), 32), memory_limit=0, tmpdir=tmp_path)
    assert (len(frames), info.height, info.width) == (2, 24, 32)
    frames.close()


def test_write_takes_what_deflicker_returns_for_tensors(tmp_path, carphone):
    """deflicker's (T, 3, H, W) tensors were refused as not (H, W, 3) uint8, bfloat16 ones and ones with
    autograd history failed in torch, and RGBA frames were refused without saying how to keep the alpha."""
    import torch

    frames = np.ascontiguousarray(carphone[:3, :32, :40])
    t = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    for given in (t, t.bfloat16(), t.clone().requires_grad_(), list(t), (t * 255).round().to(torch.uint8)):
        assert video.write(tmp_path / "t", given) == 3
        assert np.abs(video.read(tmp_path / "t")[0].astype(int) - frames).max() <= 2  # bfloat16: 8 bits
    rgba = torch.cat([t, torch.full_like(t[:, :1], 0.5)], 1)
    with pytest.raises(InputError, match="have alpha .* cannot keep: write a folder of PNGs or .webm"):
        video.write(tmp_path / "a.mp4", rgba)
    assert not (tmp_path / "a.mp4").exists()
    assert video.write(tmp_path / "a", rgba) == 3  # a folder of PNGs keeps it
    got, _ = video.open_frames(tmp_path / "a", alpha=True)
    assert got.shape == (3, 32, 40, 4) and (got[..., 3] == 128).all()


def test_write_lays_out_a_tensor_clip_as_a_whole_not_frame_by_frame(tmp_path):
    """A (T, 3, H, W) tensor of frames 3 or 4 pixels wide (deflicker's output for such frames) was laid out
    frame by frame, where a (3, H, 4) frame reads as (H, W, 4): a PNG folder got 3 frames of (3, H, 3)
    without a word, .mp4 refused them as having alpha, and 3x3 frames came back scrambled. A 4-D tensor is
    (T, C, H, W) as a whole; a (T, H, W, C) array stays as it is. A list of (3, H, 3) tensor frames was
    still read channels-last, and written scrambled: a tensor frame is channels-first where ambiguous."""
    import torch

    g = np.random.default_rng(0).integers(0, 256, (3, 8, 4, 4), dtype=np.uint8)
    for frames in (g[..., :3], g[:, :3, :3, :3], g, g[:, :, :3, :3]):  # 8x4, 3x3, 8x4 RGBA, 8x3
        t = torch.from_numpy(frames).permute(0, 3, 1, 2)
        for given in (t, t.float() / 255, list(t)):
            assert video.write(tmp_path / "p", given) == 3
            got, _ = video.open_frames(tmp_path / "p", alpha=frames.shape[3] == 4)
            assert np.array_equal(got, frames)
        assert video.write(tmp_path / "n", frames) == 3  # numpy: (T, H, W, C)
        assert np.array_equal(video.open_frames(tmp_path / "n", alpha=frames.shape[3] == 4)[0], frames)
    assert video.write(tmp_path / "o.mp4", torch.from_numpy(g[..., :3]).permute(0, 3, 1, 2)) == 3
    assert video.read(tmp_path / "o.mp4")[0].shape == (3, 8, 4, 3)


def test_a_tensor_frame_that_fits_either_layout_is_said(tmp_path, caplog):
    """A (3, 4, 3) tensor frame is (C, H, W) or (H, W, C): read as the first, a tensor's layout, and said once
    (a channels-last one came out 3 pixels wide and RGBA without a word)."""
    import torch

    video._said_layout.clear()
    frames = torch.zeros(2, 3, 4, 3, dtype=torch.uint8)
    with caplog.at_level("WARNING", logger="flickerless"):
        video.write(tmp_path / "a", frames)
        video.write(tmp_path / "b", frames)
        video.write(tmp_path / "c", torch.zeros(2, 3, 8, 16, dtype=torch.uint8))  # no doubt: not said
    assert caplog.text.count("are read as (C, H, W), a tensor's layout, though (H, W, C) fits too") == 1


def test_outputs_of_still_frames_tiny_widths_and_opaque_palettes(tmp_path, carphone):
    """A GIF kept every frame equal to the one before only as a longer delay (PIL folds them), so a
    still stretch came back with fewer frames than written and the clip could not guide its own
    style; FFV1 refused frames 1 pixel wide with a traceback; a palette PNG saved from an opaque RGBA
    image (a tRNS chunk of 255s) was read as transparent, with PIL's warning on every frame."""
    import warnings

    from PIL import Image

    a, b = carphone[0][:40, :56], carphone[5][:40, :56]
    frames = np.stack([a, a, a, b, b, a, a, b])
    video.write(tmp_path / "still.gif", frames, fps=10)
    got, _ = video.read(tmp_path / "still.gif")
    assert len(got) == 8 and video.probe(tmp_path / "still.gif").alpha is False
    assert np.array_equal(got[1], got[0]) and np.array_equal(got[2], got[0]) and np.array_equal(got[4], got[3])
    assert np.abs(got.astype(int) - frames).mean() < 6  # one 255-colour palette for the clip
    thin = np.ascontiguousarray(carphone[:3, :9, :1])
    with video.VideoWriter(tmp_path / "thin.mkv", 25, codec="ffv1") as w:
        for f in thin:
            w.write(f)
    assert np.array_equal(video.read(tmp_path / "thin.mkv")[0], thin)
    (tmp_path / "pal").mkdir()
    for i in range(2):
        Image.fromarray(carphone[i][:40, :56]).convert("RGBA").convert("P", palette=Image.ADAPTIVE, colors=64).save(
            tmp_path / "pal" / f"{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert video.probe(tmp_path / "pal").alpha is False
        assert video.read(tmp_path / "pal")[0].shape == (2, 40, 56, 3)
    # a palette whose transparent entry a pixel takes: transparent
    p = Image.fromarray(carphone[1][:40, :56]).convert("P", palette=Image.ADAPTIVE, colors=64)
    p.save(tmp_path / "pal" / "1.png", transparency=p.getpixel((0, 0)))
    assert video.image_alpha(tmp_path / "pal" / "1.png") is True


def test_the_libraries_info_lines_are_not_said_as_ours():
    """Every library's info lines came out prefixed "flickerless:" (torch's "FakeTensor cache stats" at
    exit after an early Ctrl-C); ours and the libraries' warnings still do, and -q keeps ours to warnings."""
    import subprocess

    code = ("import logging, sys\nfrom flickerless.cli import _setup_logging\n_setup_logging(sys.argv[1] == 'q')\n"
            "logging.getLogger('torch._subclasses.fake_tensor').info('FakeTensor cache stats:')\n"
            "logging.getLogger('torch.x').warning('theirs, a warning')\n"
            "logging.getLogger('flickerless.video').info('ours, info')\n"
            "logging.getLogger('flickerless.cli').warning('ours, a warning')\n")
    said = subprocess.run([sys.executable, "-c", code, "-"], capture_output=True, text=True, check=True).stderr
    assert "FakeTensor" not in said and "flickerless: theirs, a warning" in said
    assert "flickerless: ours, info" in said and "flickerless: ours, a warning" in said
    quiet = subprocess.run([sys.executable, "-c", code, "q"], capture_output=True, text=True, check=True).stderr
    assert "ours, info" not in quiet and "ours, a warning" in quiet


def test_a_full_disk_keeps_the_frames_resumable_and_says_where_it_filled(clips, tmp_path, monkeypatch, capsys):
    """A disk that filled under a PNG-folder output stopped the run where the record of its settings could
    not be written either: it was left empty, the frames kept could never be resumed, and the message
    pointed at --tmp. The record written at the start takes its place; the hint says the output's disk."""
    import errno
    import json

    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--mode", "window", "--window", "2", *FASTARGS]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    real_frame, real_whole, calls = video.host_frame, video.write_whole, [0]

    def filling(img):
        calls[0] += 1
        if calls[0] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_frame(img)

    def whole(path, content):  # the stop's record no longer fits; what was written at the start did
        if Path(path).name.endswith(".partial.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_whole(path, content)

    monkeypatch.setattr(video, "host_frame", filling)
    monkeypatch.setattr(video, "write_whole", whole)
    out = tmp_path / "o"
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "are kept in" in err and "the same command with --resume does the rest" in err
    assert "free some space (on the output's disk, or give the working files another disk" in err
    record = video.partial_path(out).with_name(video.partial_path(out).name + ".json")
    assert json.loads(record.read_text())["mode"] == "window"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".next")] == []  # the spare became the record
    monkeypatch.undo()
    assert main([*args, "-o", str(out), "--resume"]) == 0
    assert np.array_equal(video.read(out)[0], video.read(tmp_path / "whole")[0])
    assert not record.exists()
    # a run refused before any work leaves no spare record behind (it was written before the checks)
    assert main([*args, "-o", str(tmp_path / "p"), "--tmp", str(tmp_path / "nowhere")]) == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".next")]


def test_a_run_without_keyframes_says_nothing_of_them(clips, tmp_path, caplog):
    """Every run said "keyframes matched to the video's frames by number" though it had none."""
    import logging

    with caplog.at_level(logging.INFO, logger="flickerless"):
        assert main(["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device",
                     "cpu", "--mode", "window", "--window", "1", "--patch-sizes", "5", "--iterations", "1", "--frames",
                     "0:2", "-o", str(tmp_path / "o")]) == 0
    assert "wrote" in caplog.text and "keyframes matched" not in caplog.text


def test_a_video_whose_finishing_fails_says_why_its_frames_are_not_kept(carphone, tmp_path):
    """A file size limit (or a full disk) met as the video was finished: the frames could not be kept,
    said as "no frames were written" though all of them were."""
    import subprocess

    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "import numpy as np\n"
            "from flickerless import video\n"
            "frames = np.load(sys.argv[1])\n"
            "w = video.VideoWriter(sys.argv[2], 25)\n"
            "for f in frames:\n"
            "    w.write(f)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
            "try:\n"
            "    w.close()\n"
            "except Exception as e:\n"
            "    print('close:', e)\n"
            "print('kept:', w.keep_partial())\n")
    np.save(tmp_path / "f.npy", carphone[:12])
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.npy"), str(tmp_path / "o.mp4")],
                         capture_output=True, text=True, timeout=120)
    assert "kept: None" in out.stdout, out.stdout + out.stderr
    assert "writing the video failed as it was finished, and a video cut off cannot be finished" in out.stderr
    assert "no frames were written" not in out.stderr


def test_info_says_two_clips_over_the_limit_they_share(clips, monkeypatch, capsys):
    """Each of two clips under the in-memory limit was said "held in RAM", though deflicker shares the
    limit between the guide and the style and reads a clip over its half through a file."""
    one = video.probe(clips / "guide.mp4")
    frame = one.height * one.width * 3
    # 6 and 4 frames against a limit of 11: together under it, but the guide is over its half (5.5)
    monkeypatch.setattr(video, "MEMORY_LIMIT", 11 * frame)
    assert main(["info", str(clips / "guide.mp4"), str(clips / "short.mp4")]) == 0
    out = capsys.readouterr().out
    assert out.count(": held in RAM") == 2 and "guide.mp4 over 82 KiB, the in-memory limit's share of each clip" in out
    assert "short.mp4 over" not in out and "and short.mp4" not in out


def test_frames_said_lists_a_folder_once(tmp_path, monkeypatch):
    """Each frame a message named listed and sorted the whole folder again (every cut of a long clip)."""
    folder = _frames_named(tmp_path / "f", [f"frame_{i:05d}" for i in range(1, 7)])
    calls, real = [0], video._image_files

    def counted(f):
        calls[0] += 1
        return real(f)

    monkeypatch.setattr(video, "_image_files", counted)
    said = [video.frames_said(folder, i) for i in range(6)]
    assert said[5] == "5 (frame_00006.png)" and video.frames_said(folder, 1, 3) == "1-3 (frame_00002.png-frame_00004.png)"
    assert calls[0] == 1


def test_a_pyav_without_stream_dispositions_reads_the_video_stream():
    """PyAV 12, which pyproject allows (av>=12), has no ``Stream.disposition``: every read stopped with an
    AttributeError traceback. A stream without one is taken as no cover art."""
    from types import SimpleNamespace

    stream = SimpleNamespace(index=0, frames=3, codec_context=SimpleNamespace(width=8, height=8))
    container = SimpleNamespace(streams=SimpleNamespace(video=[stream]), name="clip.mp4")
    assert video._video_stream(container) is stream


def test_no_exposure_and_a_record_kept_before_exposure_was_an_option(tmp_path):
    """``--no-exposure`` reaches the blend: on a fade with an inverted style the default follows the
    guide's levels, and --no-exposure gives the blend of session 34. A stop kept by a version before
    exposure following made its frames without it: resumed with the default it is refused, saying how
    to resume it; with --no-exposure it is taken."""
    from flickerless.cli import _differing, _made_with_other

    from .test_deflicker import _fading

    guide = _fading()
    style = 255 - guide
    video.write(tmp_path / "g", guide, 25)
    video.write(tmp_path / "s", style, 25)
    outs = {}
    for name, extra in (("on", []), ("off", ["--no-exposure"])):
        assert main(["deflicker", "--guide", str(tmp_path / "g"), "--style", str(tmp_path / "s"), "--device", "cpu",
                     "--window", "5", "-q", "-o", str(tmp_path / name), *extra]) == 0
        outs[name] = video.read(tmp_path / name)[0]
    bias = {k: [float(v[i].mean()) - float(style[i].mean()) for i in (6, 8, 11, 13)] for k, v in outs.items()}
    assert min(bias["off"]) < -1.0 and max(abs(b) for b in bias["on"]) < 1.0, bias
    assert sum(abs(b) for b in bias["on"]) < 0.5 * sum(abs(b) for b in bias["off"]), bias

    old = {"mode": "table"}  # an earlier version's record: no "exposure"
    assert _differing(old, {"mode": "table", "exposure": True}) == ["exposure"]
    assert _differing(old, {"mode": "table", "exposure": False}) == []
    record = tmp_path / "r.json"
    record.write_text('{"mode": "table"}')
    assert _made_with_other(record, {"mode": "table", "exposure": True}) == \
        "exposure (off -> on; add --no-exposure to resume)"
    record.write_text('{"mode": "table", "exposure": true}')
    assert _made_with_other(record, {"mode": "table", "exposure": True}) == ""
    assert _made_with_other(record, {"mode": "table", "exposure": False}) == \
        "exposure (on -> off; drop --no-exposure to resume)"
    record.write_text('{"mode": "table", "exposure": true, "error_sigma": 0.05}')  # off with the weighting
    assert _made_with_other(record, {"mode": "table", "exposure": False, "error_sigma": None}) == \
        "exposure (on -> off), error_sigma (0.05 -> None)"


def test_exposure_match_and_a_record_kept_before_it(tmp_path):
    """``--exposure-match`` reaches the blend: on a painting held over a fade to black it matches across
    the fade and keeps the painting; without it the output is the API's default (``exposure_match=False``).
    A stop kept by a version before exposure matching was made without it, as is the default: it resumes;
    with --exposure-match it is refused, saying how to resume it."""
    from flickerless import deflicker
    from flickerless.cli import _made_with_other
    from flickerless.synthetic import psnr

    from .test_deflicker import _painting_over_a_fade

    guide, style = _painting_over_a_fade(10)
    video.write(tmp_path / "g", guide, 25)
    video.write(tmp_path / "s", style, 25)
    outs = {}
    for name, extra in (("on", ["--exposure-match"]), ("off", [])):
        assert main(["deflicker", "--guide", str(tmp_path / "g"), "--style", str(tmp_path / "s"), "--device", "cpu",
                     "--window", "5", "--no-exposure", "-q", "-o", str(tmp_path / name), *extra]) == 0
        outs[name] = video.read(tmp_path / name)[0]
    assert np.array_equal(outs["off"], deflicker(guide, style, device="cpu", window=5, exposure=False))
    assert psnr(outs["on"], style) > psnr(outs["off"], style) + 5

    record = tmp_path / "r.json"
    record.write_text('{"mode": "table", "exposure": true}')  # session 35's record: no "exposure match"
    assert _made_with_other(record, {"mode": "table", "exposure": True, "exposure match": False}) == ""
    assert _made_with_other(record, {"mode": "table", "exposure": True, "exposure match": True}) == \
        "exposure match (off -> on; drop --exposure-match to resume)"
    record.write_text('{"mode": "table", "exposure": true, "exposure match": true}')
    assert _made_with_other(record, {"mode": "table", "exposure": True, "exposure match": False}) == \
        "exposure match (on -> off; add --exposure-match to resume)"


def test_a_run_records_exposure_match_and_its_resume_checks_it(clips, tmp_path, monkeypatch, capsys):
    """The record of a stopped run holds exposure matching as in effect: one stopped with --exposure-match
    and resumed without it is refused (its kept frames were matched otherwise), saying what to add; with
    --error-sigma 0 (off either way) the one resumes with the other."""
    real = video.host_frame
    out = tmp_path / "o"
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--window", "2", *FASTARGS, "-o", str(out)]
    monkeypatch.setattr(video, "host_frame", _stopping_at(3, real))
    assert main([*args, "--exposure-match"]) == 130
    monkeypatch.setattr(video, "host_frame", real)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    assert "exposure match (on -> off; add --exposure-match to resume)" in capsys.readouterr().err
    args[-1] = str(tmp_path / "plain")
    monkeypatch.setattr(video, "host_frame", _stopping_at(3, real))
    assert main([*args, "--error-sigma", "0", "--exposure-match"]) == 130
    monkeypatch.setattr(video, "host_frame", real)
    assert main([*args, "--error-sigma", "0", "--resume"]) == 0, capsys.readouterr().err


def test_resume_across_no_exposure_where_the_weighting_is_off(clips, tmp_path, monkeypatch):
    """With --error-sigma 0 exposure following is off whether --no-exposure is given or not: a run
    stopped with one resumes with the other (the record holds it as in effect)."""
    real = video.host_frame
    out = tmp_path / "o"
    args = ["deflicker", "--guide", str(clips / "guide.mp4"), "--style", str(clips / "style.mp4"), "--device", "cpu",
            "--window", "2", "--error-sigma", "0", *FASTARGS, "-o", str(out)]
    monkeypatch.setattr(video, "host_frame", _stopping_at(3, real))
    assert main(args) == 130
    monkeypatch.setattr(video, "host_frame", real)
    assert main([*args, "--no-exposure", "--resume"]) == 0
