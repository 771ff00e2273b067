"""Pure reads of encoded video: is this frame a keyframe, how large is the picture.

The gateway forwards encoded frames without decoding them, so what a decoder would have told
it comes from the bitstream: a VP8 frame tag, the NAL unit types of an Annex B H.264 access
unit, and the picture size in an H.264 sequence parameter set (for the FLV metadata of a
remuxed rtc2rtmp push). No I/O, no PyAV.
"""

from __future__ import annotations

from collections.abc import Iterator

H264_IDR = 5
H264_SPS = 7
_H264_SLICES = range(1, 6)  # coded slices: 1-4 non-IDR (partitions), 5 IDR
# profile_idc values whose SPS carries chroma format, bit depths and scaling matrices
_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether `data` (one encoded frame as RTP depacketization yields it) starts a GOP.

    Audio codecs (Opus, G.711 ...) have no inter-frame dependencies: always True.
    """
    name = codec.lower()
    if name == "vp8":
        return is_vp8_keyframe(data)
    if name == "h264":
        return is_h264_keyframe(data)
    return True


def is_vp8_keyframe(frame: bytes) -> bool:
    # RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame, which then carries the
    # start code 9d 01 2a after the 3-byte tag.
    return len(frame) >= 6 and not frame[0] & 1 and frame[3:6] == b"\x9d\x01\x2a"


def nal_units(access_unit: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (start codes of 3 or 4 bytes)."""
    start = access_unit.find(b"\x00\x00\x01")
    while start != -1:
        start += 3
        end = access_unit.find(b"\x00\x00\x01", start)
        if end == -1:
            yield access_unit[start:]
            return
        # a 4-byte start code leaves one zero byte before the next 3-byte one
        yield access_unit[start : end - 1 if access_unit[end - 1] == 0 else end]
        start = end


def is_h264_keyframe(access_unit: bytes) -> bool:
    """True when the first coded slice of the access unit is an IDR slice."""
    for nal in nal_units(access_unit):
        if nal and nal[0] & 0x1F in _H264_SLICES:
            return nal[0] & 0x1F == H264_IDR
    return False


def h264_picture_size(access_unit: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SPS in the access unit, None without a readable one."""
    for nal in nal_units(access_unit):
        if nal and nal[0] & 0x1F == H264_SPS:
            try:
                return _sps_picture_size(_unescape(nal[1:]))
            except IndexError:
                return None  # truncated
    return None


def _unescape(payload: bytes) -> bytes:
    """RBSP from a NAL payload: drop the emulation prevention byte of every 00 00 03."""
    return payload.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    """Reads bits and Exp-Golomb codes (H.264 7.2, 9.1); IndexError past the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def bit(self) -> int:
        byte = self._data[self._pos >> 3]
        value = (byte >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise IndexError("malformed Exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _sps_picture_size(rbsp: bytes) -> tuple[int, int]:
    bits = _Bits(rbsp)
    profile_idc = bits.bits(8)
    bits.bits(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            bits.bit()  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.bit()  # qpprime_y_zero_transform_bypass_flag
        if bits.bit():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if bits.bit():
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    pic_order_cnt_type = bits.ue()
    if pic_order_cnt_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif pic_order_cnt_type == 1:
        bits.bit()  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        for _ in range(bits.ue()):
            bits.se()  # offset_for_ref_frame
    bits.ue()  # max_num_ref_frames
    bits.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.bit()
    if not frame_mbs_only:
        bits.bit()  # mb_adaptive_frame_field_flag
    bits.bit()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if bits.bit():  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        sub_width = 2 if chroma_format_idc in (1, 2) else 1
        sub_height = 2 if chroma_format_idc == 1 else 1
        crop_x = sub_width if chroma_format_idc else 1
        crop_y = (2 - frame_mbs_only) * (sub_height if chroma_format_idc else 1)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return width, height


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last
