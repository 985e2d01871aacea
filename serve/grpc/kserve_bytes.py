"""The v2 protocol's BYTES tensor wire format, as `raw_input_contents` / `raw_output_contents`
and the REST binary extension carry it: each element prefixed with its length (uint32,
little-endian).

    join_bytes([b"ab", b"c"])            # 4-byte length 2, "ab", 4-byte length 1, "c"
    split_bytes(raw, "images")           # -> [b"ab", b"c"]; InvalidInput naming the input if torn
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from serve.errors import InvalidInput

_LENGTH = struct.Struct("<I")


def split_bytes(raw: bytes, name: str) -> list[bytes]:
    """Raw BYTES tensor data: each element prefixed with its length (uint32, little-endian)."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: truncated BYTES element length")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidInput(f"input {name!r}: BYTES element longer than the data left")
        items.append(raw[offset : offset + size])
        offset += size
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)
