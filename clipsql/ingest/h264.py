"""H.264 sequence parameter sets: how many reference frames a stream declares it holds
(``max_num_ref_frames``), read from the container's header (MP4/Matroska ``avcC``) or from
the stream itself (Annex B, MPEG-TS), so :mod:`clipsql.ingest.video` can charge a decoder's
memory before it decodes a frame.
"""

from __future__ import annotations

_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


class _Bits:
    """Reads an RBSP bit by bit (IndexError past its end)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def h264_refs(nal: bytes) -> int | None:
    """``max_num_ref_frames`` of an H.264 sequence parameter set (the NAL unit, its header
    byte first); None when it cannot be read.

    >>> h264_refs(bytes.fromhex("6764003eac76110020000401a1"))
    16
    """
    try:
        b = _Bits(nal[1:].replace(b"\x00\x00\x03", b"\x00\x00"))
        profile = b.u(8)
        b.u(16)  # constraint flags, level
        b.ue()  # seq_parameter_set_id
        if profile in _HIGH_PROFILES:
            chroma = b.ue()
            if chroma == 3:
                b.u(1)
            b.ue(), b.ue(), b.u(1)  # bit depths, qpprime_y_zero_transform_bypass
            if b.u(1):  # scaling matrices
                for i in range(8 if chroma != 3 else 12):
                    if b.u(1):
                        last = following = 8
                        for _ in range(16 if i < 6 else 64):
                            if following:
                                following = (last + b.se()) % 256
                            last = following or last
        b.ue()  # log2_max_frame_num
        poc = b.ue()
        if poc == 0:
            b.ue()
        elif poc == 1:
            b.u(1), b.se(), b.se()
            for _ in range(min(b.ue(), 255)):
                b.se()
        refs = b.ue()
    except (IndexError, ValueError):
        return None
    return refs if 0 <= refs <= 64 else None


def avcc_sps(extradata: bytes) -> list[bytes]:
    """The SPS NAL units of an avcC record (MP4's, Matroska's H.264 header)."""
    out, pos = [], 6
    for _ in range(extradata[5] & 0x1F):
        n = int.from_bytes(extradata[pos:pos + 2], "big")
        out.append(extradata[pos + 2:pos + 2 + n])
        pos += 2 + n
    return [nal for nal in out if nal and nal[0] & 0x1F == 7]


def annexb_sps(data: bytes) -> list[bytes]:
    """The SPS NAL units of an Annex B byte stream (start codes)."""
    out = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        nxt = data.find(b"\x00\x00\x01", pos + 3)
        if pos + 3 < len(data) and data[pos + 3] & 0x1F == 7:
            out.append(data[pos + 3:nxt if nxt >= 0 else len(data)].rstrip(b"\x00") + b"\x00")
        pos = nxt
    return out


def lengthed_sps(data: bytes, length: int) -> list[bytes]:
    """The SPS NAL units of a sample of length-prefixed NAL units (``length`` bytes each)."""
    out, pos = [], 0
    while pos + length < len(data):
        n = int.from_bytes(data[pos:pos + length], "big")
        if data[pos + length] & 0x1F == 7:
            out.append(data[pos + length:pos + length + n])
        pos += length + n
    return out
