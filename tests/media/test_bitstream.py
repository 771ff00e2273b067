"""Keyframes and picture sizes read from real encoder output, as forwarding relies on them."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from livesignal.media import bitstream


def encoded(codec: str, size: tuple[int, int], frames: int) -> list[tuple[bytes, bool]]:
    """(bitstream, keyframe according to the encoder) for `frames` noisy frames."""
    width, height = size
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.gop_size = 10
    if codec == "libx264":
        encoder.options = {"tune": "zerolatency", "preset": "ultrafast"}
    rng = np.random.default_rng(1)
    out: list[tuple[bytes, bool]] = []
    for index in range(frames):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        out += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(frame)]
    return out


@pytest.mark.parametrize(("codec", "name"), [("libvpx", "vp8"), ("libx264", "h264")])
def test_keyframes_are_recognised_in_the_bitstream(codec: str, name: str) -> None:
    packets = encoded(codec, (160, 96), 25)
    assert len(packets) == 25
    assert [bitstream.is_keyframe(name, data) for data, _ in packets] == [key for _, key in packets]
    assert sum(key for _, key in packets) >= 2  # the test saw keyframes and others


@pytest.mark.parametrize("size", [(320, 240), (640, 360), (176, 144)])
def test_h264_picture_size_comes_from_the_sps(size: tuple[int, int]) -> None:
    keyframe = encoded("libx264", size, 1)[0][0]
    assert bitstream.h264_picture_size(keyframe) == size  # 360: cropped from 23 macroblocks


def test_audio_is_always_a_keyframe_and_garbage_never_is() -> None:
    assert bitstream.is_keyframe("opus", b"\x00")
    assert not bitstream.is_keyframe("vp8", b"\x01\x02")
    assert not bitstream.is_keyframe("h264", b"\x00\x00\x01\x41\x9a")  # a non-IDR slice
    assert bitstream.h264_picture_size(b"\x00\x00\x01\x67\x42") is None  # truncated SPS
