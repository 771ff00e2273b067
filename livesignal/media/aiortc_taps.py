"""Where the gateway reaches into aiortc (1.16): encoded frames out of a receiver, keyframe
requests out of a sender, the codec a transceiver negotiated.

aiortc decodes every frame its receiver's jitter buffer assembles (in a thread per receiver)
and has no hook for the encoded frame; its sender turns a subscriber's PLI or FIR into "make
the next encoded frame a keyframe", which means nothing to a sender that only packetizes.
A forwarding unit needs both, so this module, and only this one, depends on those
internals. Each tap checks what it relies on and reports whether it could be installed;
without it the gateway falls back to decoding (aiortc's own receiver path).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.packet import Packet

from livesignal.media.bitstream import is_keyframe
from livesignal.media.feed import FeedTrack

log = logging.getLogger(__name__)

# Codecs whose encoded frames the gateway forwards (and can decode itself when needed).
FORWARDED_CODECS = frozenset({"vp8", "h264", "opus"})

# RTCRtpReceiver's name-mangled internals used here.
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_STARTED = "_RTCRtpReceiver__started"
_RTX_SSRCS = "_RTCRtpReceiver__rtx_ssrc"

_keyframe_hooks: weakref.WeakKeyDictionary[RTCRtpSender, Callable[[], None]] = (
    weakref.WeakKeyDictionary()
)
_pending: set[asyncio.Task[None]] = set()


def negotiated_codec(transceiver: RTCRtpTransceiver) -> str | None:
    """The codec (lower case) the transceiver sends and receives with, once an offer is set.

    aiortc keeps the codecs both sides have in common in the offer's order; the first one is
    what its sender uses and what the answer tells the remote side to send.
    """
    codecs: list[RTCRtpCodecParameters] = getattr(transceiver, "_codecs", None) or []
    primary = next((codec for codec in codecs if not is_rtx(codec)), None)
    return primary.name.lower() if primary is not None else None


class _EncodedFrameQueue:
    """Stands in for RTCRtpReceiver's decoder queue (a `queue.Queue`).

    The receiver puts `(codec, JitterFrame)` on the event loop and `None` when it stops; its
    decoder thread `get()`s. Frames go to `on_frame` instead, so the thread only ever sees
    the stop marker: it ends the received track as usual and never creates a decoder.
    """

    def __init__(self, on_frame: Callable[[RTCRtpCodecParameters, JitterFrame], None]) -> None:
        self._on_frame = on_frame
        self._stop: queue.Queue[None] = queue.Queue()

    def put(self, task: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        if task is None:
            self._stop.put(None)
        else:
            self._on_frame(*task)

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        return self._stop.get(block, timeout)


def tap_encoded_frames(receiver: RTCRtpReceiver, feed: FeedTrack) -> bool:
    """Feed the receiver's encoded frames to `feed` as packets, never decoding them.

    Must run before the receiver starts (between setRemoteDescription and the connection's
    start). Keyframe requests on a video `feed` become RTCP PLI to the publisher. False, and
    nothing changed, when `feed`'s codec is not forwarded or aiortc is not as expected.
    """
    if feed.codec not in FORWARDED_CODECS:
        return False
    if (
        getattr(receiver, _STARTED, True)
        or not isinstance(getattr(receiver, _DECODER_QUEUE, None), queue.Queue)
        or not callable(getattr(receiver, "_send_rtcp_pli", None))
    ):
        log.warning("aiortc receiver internals changed: %s is decoded", feed.kind)
        return False
    mismatched = False
    failed = False

    def on_frame(codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        # Runs inside aiortc's RTP handling: an exception here would end the publisher's
        # whole DTLS transport, so a bug costs the frame (logged once), never the connection.
        nonlocal mismatched, failed
        try:
            name = codec.name.lower()
            if name != feed.codec:
                if not mismatched:
                    mismatched = True
                    log.warning("publisher switched from %s to %s: dropped", feed.codec, name)
                return
            packet = Packet(frame.data)
            packet.pts = packet.dts = frame.timestamp
            packet.time_base = fractions.Fraction(1, codec.clockRate)
            packet.is_keyframe = is_keyframe(name, frame.data)
            feed.feed(packet)
        except Exception:
            if not failed:
                failed = True
                log.exception("forwarding a %s frame failed; dropping such frames", feed.kind)

    setattr(receiver, _DECODER_QUEUE, _EncodedFrameQueue(on_frame))
    if feed.kind == "video":
        feed.on_keyframe_request = lambda: _send_pli(receiver)
    return True


def _send_pli(receiver: RTCRtpReceiver) -> None:
    """RTCP PLI for each media SSRC the publisher sends (not its retransmission SSRCs)."""
    rtx_ssrcs = getattr(receiver, _RTX_SSRCS, {})
    try:
        for source in receiver.getSynchronizationSources():
            if source.source not in rtx_ssrcs:
                _spawn(receiver._send_rtcp_pli(source.source))
    except Exception:  # callers are aiortc's sender and receiver loops: never break them
        log.exception("keyframe request to the publisher failed")


def forward_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> bool:
    """Also call `on_request` when the sender receives PLI or FIR from its remote side.

    False, and nothing changed, when aiortc's sender no longer has the hook this wraps: the
    subscriber then waits for the publisher's next keyframe instead.
    """
    if sender in _keyframe_hooks:
        _keyframe_hooks[sender] = on_request
        return True
    encoder_keyframe = getattr(sender, "_send_keyframe", None)
    if not callable(encoder_keyframe):
        log.warning("aiortc sender internals changed: keyframe requests are not forwarded")
        return False
    _keyframe_hooks[sender] = on_request

    def send_keyframe() -> None:
        encoder_keyframe()  # still right when the sender encodes frames itself
        hook = _keyframe_hooks.get(sender)
        if hook is None:
            return
        try:
            hook()
        except Exception:  # inside aiortc's RTCP handling: must not end the transport
            log.exception("forwarding a keyframe request failed")

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
    return True


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    _pending.add(task)
    task.add_done_callback(_sent)


def _sent(task: asyncio.Task[None]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # a connection going away as the request leaves; the next request will do
        log.debug("keyframe request not sent: %r", task.exception())
