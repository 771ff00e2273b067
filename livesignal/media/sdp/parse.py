"""Pure SDP helpers: read what an offer asks for, and reorder codecs in it.

No I/O and no aiortc here: once sdp/check.py has passed an offer, the gateway decides from the
parsed offer which m-lines publish and which receive a subscription before it hands the
(possibly rewritten) offer to aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class RtpCodec:
    payload_type: int
    name: str  # as in a=rtpmap, e.g. "H264", "VP8", "opus", "rtx"
    clock_rate: int


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One m-line of an offer, seen from the side that wrote it (the client)."""

    index: int
    kind: str  # "audio", "video", "application", ...
    port: int
    mid: str
    direction: str
    msid_stream: str
    msid_track: str
    codecs: tuple[RtpCodec, ...] = field(default=())

    @property
    def rejected(self) -> bool:
        return self.port == 0

    @property
    def is_media(self) -> bool:
        return self.kind in ("audio", "video")

    @property
    def client_sends(self) -> bool:
        return not self.rejected and self.direction in ("sendrecv", "sendonly")

    @property
    def client_receives(self) -> bool:
        return not self.rejected and self.direction in ("sendrecv", "recvonly")

    def has_codec(self, name: str) -> bool:
        wanted = name.lower()
        return any(codec.name.lower() == wanted for codec in self.codecs)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    ice_ufrag: str
    media: tuple[MediaSection, ...]


def _lines(sdp: str) -> list[str]:
    return [line.rstrip("\r") for line in sdp.split("\n") if line.strip()]


def parse_offer(sdp: str) -> SessionInfo:
    """Parse the parts of an SDP the gateway needs; ValueError if it is not SDP at all."""
    lines = _lines(sdp)
    if not lines or not lines[0].startswith("v="):
        raise ValueError("not an SDP document (no v= line)")
    session_ufrag = ""
    session_direction = "sendrecv"
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        elif line.startswith("a=ice-ufrag:"):
            session_ufrag = line.split(":", 1)[1]
        elif line[2:] in DIRECTIONS and line.startswith("a="):
            session_direction = line[2:]
    media: list[MediaSection] = []
    ufrag = session_ufrag
    for index, block in enumerate(blocks):
        section, block_ufrag = _parse_block(index, block, session_direction)
        media.append(section)
        if not ufrag and block_ufrag:
            ufrag = block_ufrag
    return SessionInfo(ice_ufrag=ufrag, media=tuple(media))


def _parse_block(index: int, block: list[str], default_direction: str) -> tuple[MediaSection, str]:
    parts = block[0][2:].split()
    if len(parts) < 3:
        raise ValueError(f"malformed m-line: {block[0]!r}")
    kind = parts[0]
    try:
        port = int(parts[1].split("/")[0])
    except ValueError as exc:
        raise ValueError(f"malformed m-line port: {block[0]!r}") from exc
    formats = parts[3:]
    mid = str(index)
    direction = default_direction
    msid_stream = msid_track = ""
    ufrag = ""
    rtpmap: dict[int, tuple[str, int]] = {}
    for line in block[1:]:
        if not line.startswith("a="):
            continue
        attr, _, value = line[2:].partition(":")
        if attr == "mid":
            mid = value
        elif attr in DIRECTIONS and not value:
            direction = attr
        elif attr == "msid":
            ids = value.split()
            msid_stream = ids[0] if ids else ""
            msid_track = ids[1] if len(ids) > 1 else ""
        elif attr == "ice-ufrag":
            ufrag = value
        elif attr == "rtpmap":
            pt_text, _, encoding = value.partition(" ")
            name, _, rest = encoding.partition("/")
            rate_text = rest.split("/")[0]
            if pt_text.isdigit() and rate_text.isdigit():
                rtpmap[int(pt_text)] = (name, int(rate_text))
    codecs = tuple(
        RtpCodec(int(fmt), *rtpmap[int(fmt)])
        for fmt in formats
        if fmt.isdigit() and int(fmt) in rtpmap
    )
    section = MediaSection(
        index=index,
        kind=kind,
        port=port,
        mid=mid,
        direction=direction,
        msid_stream=msid_stream,
        msid_track=msid_track,
        codecs=codecs,
    )
    return section, ufrag


def prefer_codec(sdp: str, mids: set[str], codec_name: str) -> str:
    """Move `codec_name`'s payload types to the front of the m-lines with the given mids.

    aiortc answers with the offer's codec order and sends with the first common codec, so
    this is how the gateway makes a subscription to a pass-through H.264 resource negotiate
    H.264 without touching aiortc internals. Other codecs stay as fallbacks.
    """
    if not mids:
        return sdp
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    trailing = lines[-1] == ""
    if trailing:
        lines = lines[:-1]
    block_starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    block_ends = block_starts[1:] + [len(lines)]
    wanted = codec_name.lower()
    for index, (start, end) in enumerate(zip(block_starts, block_ends, strict=True)):
        block = lines[start:end]
        mid = next((line[6:] for line in block if line.startswith("a=mid:")), str(index))
        if mid not in mids:
            continue
        preferred: list[str] = []
        for line in block:
            if line.startswith("a=rtpmap:"):
                pt, _, encoding = line[9:].partition(" ")
                if encoding.split("/")[0].lower() == wanted:
                    preferred.append(pt)
        if not preferred:
            continue
        head = lines[start].split()
        formats = head[3:]
        reordered = [f for f in formats if f in preferred] + [
            f for f in formats if f not in preferred
        ]
        lines[start] = " ".join(head[:3] + reordered)
        # aiortc takes the codec order from the a=rtpmap lines, browsers from the m-line:
        # reorder both. The rtpmap lines trade places; fmtp/rtcp-fb lines name their PT.
        slots = [i for i in range(start, end) if lines[i].startswith("a=rtpmap:")]
        rtpmaps = [lines[i] for i in slots]
        rtpmaps.sort(key=lambda line: line[9:].partition(" ")[0] not in preferred)
        for slot, line in zip(slots, rtpmaps, strict=True):
            lines[slot] = line
    return newline.join(lines) + (newline if trailing else "")
