"""How many decoders and encoders the gateway has started: what forwarding saves, counted.

Forwarding a publisher's encoded frames costs a subscriber packetizing and sending; a decoder
or an encoder is what makes a subscriber expensive. Every place in the gateway that starts
one reports it here, so tests can assert that forwarded subscribers started none and the
bench can show it. The counts only grow; read a `snapshot()` before and after.

Decoders: a shared decoder of an encoded resource (`decoding.SharedDecoder`), aiortc's
receiver decoder when the encoded-frame tap could not be installed, and the AAC decoder of an
rtmp2rtc pull. Encoders: every consumer that takes frames rather than packets encodes them,
an RTCRtpSender (VP8/H.264/Opus) or an rtc2rtmp push (H.264/AAC); `SubscriberTrack` counts
one the first time it hands such a consumer a frame.
"""

from __future__ import annotations

import threading
from collections import Counter


class CodecCensus:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the RTMP threads report too
        self._decoders: Counter[str] = Counter()
        self._encoders: Counter[str] = Counter()

    def decoder_started(self, what: str) -> None:
        with self._lock:
            self._decoders[what] += 1

    def encoder_started(self, what: str) -> None:
        with self._lock:
            self._encoders[what] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{"decoders": {what: count}, "encoders": {what: count}} since the process started."""
        with self._lock:
            return {"decoders": dict(self._decoders), "encoders": dict(self._encoders)}

    def totals(self) -> tuple[int, int]:
        """(decoders, encoders) started since the process started."""
        with self._lock:
            return self._decoders.total(), self._encoders.total()


CENSUS = CodecCensus()
