"""The pure SDP helpers: what an offer publishes and receives, and codec reordering."""

from __future__ import annotations

import pytest

from livesignal.media.sdp import parse as sdp

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1 2",
        "m=audio 9 UDP/TLS/RTP/SAVPF 96 0",
        "a=mid:0",
        "a=sendrecv",
        "a=msid:stream-a track-a",
        "a=ice-ufrag:abcd",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100",
        "a=mid:1",
        "a=recvonly",
        "a=rtpmap:97 VP8/90000",
        "a=rtpmap:98 rtx/90000",
        "a=fmtp:98 apt=97",
        "a=rtpmap:99 H264/90000",
        "a=rtpmap:100 rtx/90000",
        "a=fmtp:100 apt=99",
        "m=video 0 UDP/TLS/RTP/SAVPF 97",
        "a=mid:2",
        "a=sendonly",
        "a=rtpmap:97 VP8/90000",
        "",
    ]
)


def test_parse_offer_reads_directions_msid_codecs_and_ufrag() -> None:
    info = sdp.parse_offer(OFFER)
    assert info.ice_ufrag == "abcd"
    audio, video, rejected = info.media
    assert (audio.kind, audio.mid, audio.msid_stream, audio.msid_track) == (
        "audio",
        "0",
        "stream-a",
        "track-a",
    )
    assert audio.client_sends and audio.client_receives
    assert video.client_receives and not video.client_sends
    assert [c.name for c in video.codecs] == ["VP8", "rtx", "H264", "rtx"]
    assert video.has_codec("h264")
    assert rejected.rejected and not rejected.client_sends


def test_parse_offer_rejects_non_sdp() -> None:
    with pytest.raises(ValueError):
        sdp.parse_offer("hello")


def test_prefer_codec_moves_h264_first_only_on_given_mids() -> None:
    rewritten = sdp.prefer_codec(OFFER, {"1"}, "H264")
    lines = rewritten.split("\r\n")
    assert "m=video 9 UDP/TLS/RTP/SAVPF 99 97 98 100" in lines
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 96 0" in lines
    assert rewritten.endswith("\r\n")
    assert sdp.parse_offer(rewritten).media[1].codecs[0].name == "H264"
    rtpmaps = [line for line in lines if line.startswith("a=rtpmap:")]
    assert rtpmaps[2:6] == [
        "a=rtpmap:99 H264/90000",
        "a=rtpmap:97 VP8/90000",
        "a=rtpmap:98 rtx/90000",
        "a=rtpmap:100 rtx/90000",
    ]


def test_prefer_codec_leaves_offer_without_that_codec_alone() -> None:
    assert sdp.prefer_codec(OFFER, {"2"}, "H264") == OFFER
    assert sdp.prefer_codec(OFFER, set(), "H264") == OFFER
