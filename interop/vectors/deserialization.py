"""deserialization.json: variable-length vector headers."""

from __future__ import annotations

from mlscore.codec import Reader, encode_varint


def check(entry: dict) -> None:
    header = bytes.fromhex(entry["vlbytes_header"])
    reader = Reader(header)
    assert reader.varint() == entry["length"], "decoded length"
    reader.finish()
    assert encode_varint(entry["length"]) == header, "re-encoded header"
