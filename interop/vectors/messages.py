"""messages.json: every message type decodes and re-encodes to identical bytes."""

from __future__ import annotations

from collections.abc import Callable

from mlscore.codec import Struct
from mlscore.framing import MLSMessage
from mlscore.messages import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    GroupSecrets,
    PreSharedKey,
    ReInit,
    Remove,
    Update,
)
from mlscore.tree.ratchet_tree import decode_ratchet_tree, encode_ratchet_tree


def _struct(cls: type[Struct]) -> Callable[[bytes], bytes]:
    return lambda data: cls.from_bytes(data).to_bytes()


CODECS: dict[str, Callable[[bytes], bytes]] = {
    "mls_welcome": _struct(MLSMessage),
    "mls_group_info": _struct(MLSMessage),
    "mls_key_package": _struct(MLSMessage),
    "ratchet_tree": lambda data: encode_ratchet_tree(decode_ratchet_tree(data)),
    "group_secrets": _struct(GroupSecrets),
    "add_proposal": _struct(Add),
    "update_proposal": _struct(Update),
    "remove_proposal": _struct(Remove),
    "pre_shared_key_proposal": _struct(PreSharedKey),
    "re_init_proposal": _struct(ReInit),
    "external_init_proposal": _struct(ExternalInit),
    "group_context_extensions_proposal": _struct(GroupContextExtensions),
    "commit": _struct(Commit),
    "public_message_application": _struct(MLSMessage),
    "public_message_proposal": _struct(MLSMessage),
    "public_message_commit": _struct(MLSMessage),
    "private_message": _struct(MLSMessage),
}


def check(entry: dict) -> None:
    assert set(entry) == set(CODECS), f"unexpected fields {set(entry) ^ set(CODECS)}"
    for name, round_trip in CODECS.items():
        data = bytes.fromhex(entry[name])
        assert round_trip(data) == data, f"{name} does not re-encode identically"
