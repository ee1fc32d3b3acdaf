"""key-schedule.json: a chain of epochs, every derived secret and the exporter."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.key_schedule import GroupContext, derive_epoch_secrets, external_key_pair, mls_exporter
from mlscore.leaf_node import PROTOCOL_VERSION_MLS10


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    init_secret = h(entry["initial_init_secret"])
    for index, epoch in enumerate(entry["epochs"]):
        context = GroupContext(PROTOCOL_VERSION_MLS10, suite.id, h(entry["group_id"]), index,
                               h(epoch["tree_hash"]), h(epoch["confirmed_transcript_hash"]))
        assert context.to_bytes() == h(epoch["group_context"]), f"group_context {index}"
        joiner, secrets = derive_epoch_secrets(suite, init_secret, h(epoch["commit_secret"]),
                                               h(epoch["psk_secret"]), context.to_bytes())
        assert joiner == h(epoch["joiner_secret"]), f"joiner_secret {index}"
        for name in ("welcome_secret", "init_secret", "sender_data_secret", "encryption_secret",
                     "exporter_secret", "epoch_authenticator", "external_secret", "confirmation_key",
                     "membership_key", "resumption_psk"):
            assert getattr(secrets, name) == h(epoch[name]), f"{name} {index}"
        assert external_key_pair(suite, secrets.external_secret)[1] == h(epoch["external_pub"]), "external_pub"
        exporter = epoch["exporter"]
        # The vectors use the label string as written (it happens to look like hex).
        out = mls_exporter(suite, secrets.exporter_secret, exporter["label"], h(exporter["context"]),
                           exporter["length"])
        assert out == h(exporter["secret"]), f"exporter {index}"
        init_secret = secrets.init_secret
