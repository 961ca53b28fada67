"""The SSH wire encoding (RFC 4251 section 5): strings, uint32s and mpints."""

from __future__ import annotations

import struct

from agent.errors import WireError


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ssh_mpint(value: int) -> bytes:
    if value == 0:
        return ssh_string(b"")
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
    return ssh_string(raw)


class WireReader:
    """Reads SSH wire fields from a bytes object, raising WireError on overrun."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WireError("truncated SSH structure")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        return struct.unpack(">I", self.raw(4))[0]

    def uint64(self) -> int:
        return struct.unpack(">Q", self.raw(8))[0]

    def string(self) -> bytes:
        return self.raw(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def done(self) -> bool:
        return self.pos == len(self.data)
