"""welcome.json: decrypt a Welcome, verify the GroupInfo signature and confirmation tag."""

from __future__ import annotations

from mlscore.framing import MLSMessage
from mlscore.group import open_welcome
from mlscore.messages import KeyPackage


def check(entry: dict) -> None:
    h = bytes.fromhex
    key_package = MLSMessage.from_bytes(h(entry["key_package"])).body
    assert isinstance(key_package, KeyPackage)
    opened = open_welcome(h(entry["welcome"]), key_package, h(entry["init_priv"]))
    opened.group_info.verify(opened.suite, h(entry["signer_pub"]))
