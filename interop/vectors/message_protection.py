"""message-protection.json: open given Public/PrivateMessages, then protect and reopen our own."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.framing import (
    ContentType,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    WireFormat,
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    verify_public,
)
from mlscore.leaf_node import PROTOCOL_VERSION_MLS10
from mlscore.messages import Commit, proposal_from_bytes
from mlscore.schedule.key_schedule import GroupContext
from mlscore.schedule.secret_tree import SecretTree

SENDER = 1
N_LEAVES = 2


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    context = GroupContext(PROTOCOL_VERSION_MLS10, suite.id, h(entry["group_id"]), entry["epoch"],
                           h(entry["tree_hash"]), h(entry["confirmed_transcript_hash"]))
    signature_pub = h(entry["signature_pub"])

    def new_tree() -> SecretTree:
        return SecretTree(suite, h(entry["encryption_secret"]), N_LEAVES)

    def key_of(leaf: int) -> bytes:
        assert leaf == SENDER, f"unexpected sender {leaf}"
        return signature_pub

    cases = [
        (ContentType.PROPOSAL, proposal_from_bytes(h(entry["proposal"])), "proposal"),
        (ContentType.COMMIT, Commit.from_bytes(h(entry["commit"])), "commit"),
        (ContentType.APPLICATION, h(entry["application"]), "application"),
    ]
    for content_type, expected, name in cases:
        if content_type != ContentType.APPLICATION:
            public = MLSMessage.from_bytes(h(entry[f"{name}_pub"])).body
            assert isinstance(public, PublicMessage)
            opened = verify_public(suite, public, h(entry["membership_key"]), context, signature_pub)
            assert opened.content.content == expected, f"{name} public content"
        private = MLSMessage.from_bytes(h(entry[f"{name}_priv"])).body
        assert isinstance(private, PrivateMessage)
        opened = unprotect_private(suite, new_tree(), h(entry["sender_data_secret"]), private, key_of, context)
        assert opened.content.content == expected, f"{name} private content"

        # Our own protection must open the same way.
        content = FramedContent(context.group_id, context.epoch, Sender.member(SENDER), b"", content_type, expected)
        tag = b"\x00" * suite.hash_len if content_type == ContentType.COMMIT else None
        for wire_format in (WireFormat.PUBLIC_MESSAGE, WireFormat.PRIVATE_MESSAGE):
            if wire_format == WireFormat.PUBLIC_MESSAGE and content_type == ContentType.APPLICATION:
                continue
            signature = sign_content(suite, h(entry["signature_priv"]), wire_format, content, context)
            auth = FramedContentAuthData(signature, tag)
            if wire_format == WireFormat.PUBLIC_MESSAGE:
                message = protect_public(suite, content, auth, h(entry["membership_key"]), context)
                again = verify_public(suite, PublicMessage.from_bytes(message.to_bytes()),
                                      h(entry["membership_key"]), context, signature_pub)
            else:
                sealed = protect_private(suite, new_tree(), h(entry["sender_data_secret"]), content, auth,
                                         padding=7)
                again = unprotect_private(suite, new_tree(), h(entry["sender_data_secret"]),
                                          PrivateMessage.from_bytes(sealed.to_bytes()), key_of, context)
            assert again.content == content, f"{name} own {wire_format.name} round trip"
