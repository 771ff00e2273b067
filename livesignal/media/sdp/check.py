"""Offer checks: refuse, saying why, an SDP offer the gateway cannot take (PROTOCOL §6).

aiortc's SDP parser trusts its input: a malformed attribute raises whatever the parsing line
happens to raise (KeyError, IndexError, AttributeError, StopIteration...), and some omissions
only fail once ICE connects (no a=fingerprint). So every line aiortc reads is checked here
first, against the grammar it parses (or a stricter one). Pure: no I/O and no aiortc.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from livesignal.media.result_codes import shown
from livesignal.media.sdp.parse import DIRECTIONS, SessionInfo


class OfferError(ValueError):
    """Why the gateway cannot take an offer; answered 40002 with this message."""


MAX_MEDIA_SECTIONS = 64  # one per track a client sends or receives; bounds sockets per offer
MAX_MID_LENGTH = 32  # the mid travels in an RTP header extension
# RFC 8830's msid-id is at most 64 characters; the stream id reaches every member of the room
# in media.published, so it is bounded like every other value a client makes the server relay.
MAX_MSID_ID_LENGTH = 64
# Lines aiortc/aioice handle in quadratic time (each new one is compared with all before it):
# 1 MiB of them blocks the event loop for seconds. Browsers send a handful per m-line.
MAX_LINES_PER_SECTION = {"candidate": 64, "ssrc": 64}
SETUP_VALUES = ("actpass", "active", "passive")
# The digests aiortc can check the client's DTLS certificate against.
FINGERPRINT_ALGORITHMS = ("sha-256", "sha-384", "sha-512")
# DTLS-SRTP profiles: aiortc answers UDP/TLS/RTP/SAVPF, which a plain RTP client cannot use.
SRTP_PROFILE_ENDINGS = ("RTP/SAVPF", "RTP/SAVP")
DATA_CHANNEL_PROFILES = ("UDP/DTLS/SCTP", "DTLS/SCTP")
# fmtp parameters aiortc reads with int().
INTEGER_FMTP_PARAMETERS = frozenset(
    {"apt", "max-fr", "max-fs", "maxplaybackrate", "minptime", "stereo", "useinbandfec"}
)
MAX_PAYLOAD_TYPE = 127  # 7 bits in the RTP header
RTCP_CONFLICT_TYPES = range(72, 77)  # would be taken for RTCP packet types (RFC 5761)
MAX_U32 = 2**32 - 1

# Besides CR/LF, str.splitlines (what aiortc splits lines with) breaks at some of these.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# Digits are spelled [0-9]: \d would take any Unicode digit, which aiortc's int() then reads.
_M_LINE = re.compile(r"m=([^ ]+) ([0-9]+) ([A-Z/]+) (.+)")
_CONNECTION = re.compile(r"IN (?:IP4|IP6) [^ ]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 4566 token
_ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")  # RFC 8839
_ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
_FINGERPRINT = re.compile(r"\S+ [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+")
_RTPMAP = re.compile(r"([0-9]{1,3}) [^\s/]+/([0-9]{1,9})(?:/[0-9]{1,2})?")
_RTPMAP_WITHOUT_RATE = re.compile(r"[0-9]{1,3} [^\s/]+/?")
_FMTP = re.compile(r"([0-9]{1,3}) (\S.*)")
_RTCP_FB = re.compile(r"(?:\*|[0-9]{1,3}) \S+(?: \S.*)?")
_EXTMAP = re.compile(r"([0-9]{1,3})(?:/(?:sendrecv|sendonly|recvonly|inactive))? \S+")
_RTCP = re.compile(r"([0-9]{1,5})(?: IN (?:IP4|IP6) [^ ]+)?")
_SSRC = re.compile(r"([0-9]{1,10}) [^:]*:.*")
_SCTPMAP = re.compile(r"([0-9]{1,5}) .+")

AttributeRule = Callable[[str], str | None]  # the problem with a value, or None


def _in_range(text: str, low: int, high: int) -> bool:
    """Whether `text` is plain ASCII digits for a number in [low, high] (no huge int())."""
    return (
        text.isascii()
        and text.isdigit()
        and len(text) <= len(str(high))
        and low <= int(text) <= high
    )


def _payload_type_problem(text: str) -> str | None:
    if not _in_range(text, 0, MAX_PAYLOAD_TYPE):
        return f"payload type {shown(text)} is not 0..{MAX_PAYLOAD_TYPE}"
    if int(text) in RTCP_CONFLICT_TYPES:
        return f"payload type {text} collides with RTCP"
    return None


def _pattern(regex: re.Pattern[str], expected: str) -> AttributeRule:
    def check(value: str) -> str | None:
        return None if regex.fullmatch(value) else f"is not {expected}"

    return check


def _number(low: int, high: int) -> AttributeRule:
    def check(value: str) -> str | None:
        return None if _in_range(value, low, high) else f"is not a number in {low}..{high}"

    return check


def _check_setup(value: str) -> str | None:
    return None if value in SETUP_VALUES else f"is not one of {', '.join(SETUP_VALUES)}"


def _check_rtpmap(value: str) -> str | None:
    match = _RTPMAP.fullmatch(value)
    if match is None:
        if _RTPMAP_WITHOUT_RATE.fullmatch(value):
            return "has no clock rate (<payload type> <codec>/<clock rate>)"
        return "is not <payload type> <codec>/<clock rate>[/<channels>]"
    if int(match[2]) == 0:
        return "has clock rate 0"
    return _payload_type_problem(match[1])


def _check_fmtp(value: str) -> str | None:
    match = _FMTP.fullmatch(value)
    if match is None:
        return "is not <payload type> <parameters>"
    for parameter in match[2].split(";"):
        name, equals, number = parameter.partition("=")
        if equals and name in INTEGER_FMTP_PARAMETERS and not _in_range(number, 0, MAX_U32):
            return f"has {name}={shown(number)}, not a number"
    return None


def _check_extmap(value: str) -> str | None:
    match = _EXTMAP.fullmatch(value)
    if match is None:
        return "is not <id>[/<direction>] <uri>"
    # RTP header extension ids are 1..255 (RFC 8285); aiortc asserts that when it sends.
    return None if _in_range(match[1], 1, 255) else "has an id outside 1..255"


def _check_candidate(value: str) -> str | None:
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ":
        return "is not <foundation> <component> <transport> <priority> <address> <port> typ ..."
    numbers = [(bits[1], 1, 256), (bits[3], 0, MAX_U32), (bits[5], 0, 65535)]
    numbers += [(bits[i + 1], 0, 65535) for i in range(8, len(bits) - 1, 2) if bits[i] == "rport"]
    if not all(_in_range(text, low, high) for text, low, high in numbers):
        return "has a component, priority or port out of range"
    return None


def _check_rtcp(value: str) -> str | None:
    match = _RTCP.fullmatch(value)
    if match is None or not _in_range(match[1], 0, 65535):
        return "is not <port> [IN IP4|IP6 <address>]"
    return None


def _check_ssrc(value: str) -> str | None:
    match = _SSRC.fullmatch(value)
    if match is None or not _in_range(match[1], 0, MAX_U32):
        return "is not <32-bit ssrc> <attribute>:<value>"
    return None


def _check_ssrc_group(value: str) -> str | None:
    bits = value.split()
    if not bits or not all(_in_range(ssrc, 0, MAX_U32) for ssrc in bits[1:]):
        return "is not <semantics> <32-bit ssrc>..."
    return None


def _check_sctpmap(value: str) -> str | None:
    match = _SCTPMAP.fullmatch(value)
    if match is None or not _in_range(match[1], 0, 65535):
        return "is not <port> <protocol>"
    return None


def _check_mid(value: str) -> str | None:
    if len(value) > MAX_MID_LENGTH or not _TOKEN.fullmatch(value):
        return f"is not a token of at most {MAX_MID_LENGTH} characters"
    return None


def _check_msid(value: str) -> str | None:
    ids = value.split()
    if not 1 <= len(ids) <= 2 or " ".join(ids) != value:
        return "is not <stream id> [<track id>]"
    if any(len(part) > MAX_MSID_ID_LENGTH for part in ids):
        return f"has an id over {MAX_MSID_ID_LENGTH} characters"
    return None


def _check_group(value: str) -> str | None:
    return None if value.split() else "is empty"


_MEDIA_RULES: dict[str, AttributeRule] = {
    "candidate": _check_candidate,
    "extmap": _check_extmap,
    "fingerprint": _pattern(_FINGERPRINT, "<hash> <hex bytes separated by colons>"),
    "fmtp": _check_fmtp,
    "ice-pwd": _pattern(_ICE_PWD, "22 to 256 ICE characters"),
    "ice-ufrag": _pattern(_ICE_UFRAG, "4 to 256 ICE characters"),
    "max-message-size": _number(0, MAX_U32),
    "mid": _check_mid,
    "msid": _check_msid,
    "rtcp": _check_rtcp,
    "rtcp-fb": _pattern(_RTCP_FB, "<payload type or *> <type> [<parameter>]"),
    "rtpmap": _check_rtpmap,
    "sctp-port": _number(0, 65535),
    "sctpmap": _check_sctpmap,
    "setup": _check_setup,
    "ssrc": _check_ssrc,
    "ssrc-group": _check_ssrc_group,
}
_SESSION_RULES: dict[str, AttributeRule] = {
    "fingerprint": _MEDIA_RULES["fingerprint"],
    "group": _check_group,
    "ice-pwd": _MEDIA_RULES["ice-pwd"],
    "ice-ufrag": _MEDIA_RULES["ice-ufrag"],
    "msid-semantic": _check_group,
    "setup": _check_setup,
}
# At most one of each per block: aiortc would silently take the last one.
_SINGLE_ATTRIBUTES = ("mid", "setup", "ice-ufrag", "ice-pwd", "sctp-port")


@dataclass(slots=True)
class _Block:
    """The session part or one m-line of an offer, as aiortc groups the lines."""

    where: str  # for messages: "session", "m-line 2 (video)"
    lines: list[str]
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [value or "" for attr, value in self.attributes if attr == name]

    def has(self, name: str) -> bool:
        return any(attr == name for attr, _ in self.attributes)

    def error(self, problem: str) -> OfferError:
        return OfferError(f"{self.where}: {problem}")


def check_offer(text: str) -> None:
    """Refuse (OfferError, saying why) an offer aiortc would choke on or cannot connect with."""
    session, media = _blocks(_checked_lines(text))
    _check_session(session)
    if not media:
        raise OfferError("the offer has no m-line")
    if len(media) > MAX_MEDIA_SECTIONS:
        raise OfferError(f"the offer has more than {MAX_MEDIA_SECTIONS} m-lines")
    kinds_and_mids = [_check_media(block, session) for block in media]
    kinds = [kind for kind, _ in kinds_and_mids]
    mids = [mid for _, mid in kinds_and_mids]
    if not any(kind in ("audio", "video") for kind in kinds):
        raise OfferError("the offer has no audio or video m-line")
    if kinds.count("application") > 1:
        raise OfferError("the offer has more than one application (data channel) m-line")
    repeated = next((mid for mid in mids if mids.count(mid) > 1), None)
    if repeated is not None:
        raise OfferError(f"mid {shown(repeated)} names more than one m-line")
    _check_bundle(session, mids)


def _checked_lines(text: str) -> list[str]:
    lines: list[str] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if _CONTROL.search(line):
            raise OfferError(f"line {number} contains a control character")
        if line.strip():
            lines.append(line)
    if not lines or lines[0] != "v=0":
        raise OfferError("not an SDP offer (it must start with v=0)")
    return lines


def _blocks(lines: list[str]) -> tuple[_Block, list[_Block]]:
    session = _Block("session", [])
    media: list[_Block] = []
    for line in lines:
        if line.startswith("m="):
            media.append(_Block(f"m-line {len(media) + 1}", [line]))
        else:
            (media[-1] if media else session).lines.append(line)
    for block in (session, *media):
        block.attributes = [_attribute(line) for line in block.lines if line.startswith("a=")]
    return session, media


def _attribute(line: str) -> tuple[str, str | None]:
    """(name, value) as aiortc splits it: no colon means no value at all."""
    name, colon, value = line[2:].partition(":")
    return name, (value if colon else None)


def _check_attributes(block: _Block, rules: dict[str, AttributeRule]) -> None:
    for name, value in block.attributes:
        rule = rules.get(name)
        if rule is None:
            continue
        if value is None:
            raise block.error(f"a={name} has no value")
        problem = rule(value)
        if problem is not None:
            raise block.error(f"a={name}:{shown(value)} {problem}")
    for name in _SINGLE_ATTRIBUTES:
        if len(block.values(name)) > 1:
            raise block.error(f"a={name} appears more than once")
    for name, limit in MAX_LINES_PER_SECTION.items():
        if len(block.values(name)) > limit:
            raise block.error(f"has more than {limit} a={name} lines")


def _check_connection_lines(block: _Block) -> None:
    for line in block.lines:
        if line.startswith("c=") and _CONNECTION.fullmatch(line[2:]) is None:
            raise block.error(f"{shown(line)} is not c=IN IP4|IP6 <address>")


def _check_session(session: _Block) -> None:
    if any(line.startswith("v=") and line.strip() != "v=0" for line in session.lines):
        raise session.error("only SDP version v=0 is known")
    _check_connection_lines(session)
    _check_attributes(session, _SESSION_RULES)


def _check_media(block: _Block, session: _Block) -> tuple[str, str]:
    """Check one m-line and its attributes; its (kind, mid)."""
    kind, profile, formats = _check_m_line(block)
    _check_connection_lines(block)
    _check_attributes(block, _MEDIA_RULES)
    _check_transport(block, session)
    _check_codec_maps(block)
    if kind == "application":
        _check_data_channel(block, profile, formats)
    else:
        _check_rtp(block, profile, formats)
    mids = block.values("mid")
    if not mids:
        raise block.error("has no a=mid")
    return kind, mids[0]


def _check_m_line(block: _Block) -> tuple[str, str, list[str]]:
    match = _M_LINE.fullmatch(block.lines[0])
    if match is None:
        raise block.error(f"{shown(block.lines[0])} is not m=<kind> <port> <profile> <formats>")
    kind, port, profile, formats = match[1], match[2], match[3], match[4].split()
    if kind not in ("audio", "video", "application"):
        raise block.error(f"media kind {shown(kind)} is not audio, video or application")
    block.where = f"{block.where} ({kind})"
    if not _in_range(port, 0, 65535):
        raise block.error(f"port {shown(port)} is not 0..65535")
    if not formats:
        raise block.error("lists no formats")
    return kind, profile, formats


def _check_transport(block: _Block, session: _Block) -> None:
    """ICE credentials and DTLS parameters, from the m-line or else the session."""
    for name in ("ice-ufrag", "ice-pwd"):
        if not block.has(name) and not session.has(name):
            raise block.error(f"has no a={name} (ICE needs it)")
    if not block.has("setup") and not session.has("setup"):
        raise block.error(f"has no a=setup ({', '.join(SETUP_VALUES)}: the DTLS role)")
    fingerprints = session.values("fingerprint") + block.values("fingerprint")
    if not any(fp.split()[0].lower() in FINGERPRINT_ALGORITHMS for fp in fingerprints):
        raise block.error(
            f"has no a=fingerprint with {', '.join(FINGERPRINT_ALGORITHMS)} (DTLS needs it)"
        )


def _check_codec_maps(block: _Block) -> None:
    """Each payload type mapped once; an fmtp only for a mapped one (aiortc looks it up)."""
    mapped: set[int] = set()
    for payload_type in _mapped_payload_types(block):
        if payload_type in mapped:
            raise block.error(f"maps payload type {payload_type} twice")
        mapped.add(payload_type)
    for value in block.values("fmtp"):
        payload_type = int(value.split(" ", 1)[0])
        if payload_type not in mapped:
            raise block.error(f"a=fmtp:{payload_type} names a payload type without a=rtpmap")


def _mapped_payload_types(block: _Block) -> list[int]:
    # int() is safe: the rtpmap rule let through 1..3 ASCII digits only
    return [int(value.split(" ", 1)[0]) for value in block.values("rtpmap")]


def _check_rtp(block: _Block, profile: str, formats: list[str]) -> None:
    if not profile.endswith(SRTP_PROFILE_ENDINGS):
        raise block.error(f"profile {profile} is not DTLS-SRTP (UDP/TLS/RTP/SAVPF)")
    for payload_type in formats:
        problem = _payload_type_problem(payload_type)
        if problem is not None:
            raise block.error(problem)
    if not set(_mapped_payload_types(block)).intersection(int(pt) for pt in formats):
        raise block.error("maps none of its payload types with a=rtpmap")
    if not block.has("rtcp-mux"):
        raise block.error("has no a=rtcp-mux (RTP and RTCP must share the port)")
    directions = [(name, value) for name, value in block.attributes if name in DIRECTIONS]
    if len(directions) != 1:
        raise block.error(f"needs exactly one direction ({', '.join(DIRECTIONS)})")
    if directions[0][1] is not None:
        raise block.error(f"a={directions[0][0]} takes no value")


def _check_data_channel(block: _Block, profile: str, formats: list[str]) -> None:
    if profile not in DATA_CHANNEL_PROFILES:
        raise block.error(f"profile {profile} is not {' or '.join(DATA_CHANNEL_PROFILES)}")
    if profile == "UDP/DTLS/SCTP" and not block.has("sctp-port"):
        raise block.error("has no a=sctp-port")
    if profile == "DTLS/SCTP" and not _in_range(formats[0], 0, 65535):
        raise block.error(f"SCTP port {shown(formats[0])} is not 0..65535")


def _check_bundle(session: _Block, mids: list[str]) -> None:
    """aiortc moves every bundled m-line onto the first one's transport: it must exist."""
    bundles = [v.split()[1:] for v in session.values("group") if v.split()[0] == "BUNDLE"]
    if len(bundles) > 1:
        raise OfferError("session: more than one a=group:BUNDLE")
    for items in bundles:
        for item in items:
            if item not in mids:
                raise OfferError(f"session: a=group:BUNDLE names mid {shown(item)}, no m-line")
        if len(set(items)) != len(items):
            raise OfferError("session: a=group:BUNDLE names a mid twice")


def renegotiation_problem(previous: SessionInfo, offer: SessionInfo) -> str | None:
    """Why `offer` cannot renegotiate the connection `previous` set up, or None.

    A later offer keeps every m-line where it was (RFC 8829 5.2.2): aiortc finds transceivers
    by position when it applies the answer, so a removed or reordered m-line breaks it.
    """
    if len(offer.media) < len(previous.media):
        return (
            f"the offer has {len(offer.media)} m-lines, the connection has "
            f"{len(previous.media)}: m-lines cannot be removed"
        )
    for old, new in zip(previous.media, offer.media, strict=False):
        if (old.kind, old.mid) != (new.kind, new.mid):
            return (
                f"m-line {old.index + 1} was {old.kind} mid {shown(old.mid)}, now {new.kind} "
                f"mid {shown(new.mid)}: m-lines cannot be reordered or replaced"
            )
    return None
