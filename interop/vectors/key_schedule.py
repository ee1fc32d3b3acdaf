"""key-schedule.json: a chain of epochs, every derived secret and the exporter."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.leaf_node import PROTOCOL_VERSION_MLS10
from mlscore.schedule import key_schedule as ks
from mlscore.schedule.key_schedule import GroupContext

_SECRETS = ("welcome_secret", "init_secret", "sender_data_secret", "encryption_secret", "exporter_secret",
            "epoch_authenticator", "external_secret", "confirmation_key", "membership_key", "resumption_psk")


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    init_secret = h(entry["initial_init_secret"])
    for index, epoch in enumerate(entry["epochs"]):
        context = GroupContext(PROTOCOL_VERSION_MLS10, suite.id, h(entry["group_id"]), index,
                               h(epoch["tree_hash"]), h(epoch["confirmed_transcript_hash"]))
        encoded = context.to_bytes()
        assert encoded == h(epoch["group_context"]), f"group_context {index}"
        assert GroupContext.from_bytes(encoded) == context, f"group_context round trip {index}"
        psk_secret = h(epoch["psk_secret"])
        joiner, secrets = ks.derive_epoch_secrets(suite, init_secret, h(epoch["commit_secret"]), psk_secret,
                                                  encoded)
        assert joiner == h(epoch["joiner_secret"]), f"joiner_secret {index}"
        for name in _SECRETS:
            assert getattr(secrets, name) == h(epoch[name]), f"{name} {index}"
        # The joiner's path (Welcome) must land on the same secrets.
        assert ks.welcome_secret(suite, joiner, psk_secret) == h(epoch["welcome_secret"]), f"joiner welcome {index}"
        epoch_secret = ks.epoch_secret(suite, joiner, psk_secret, encoded)
        assert ks.secrets_from_epoch_secret(suite, epoch_secret, secrets.welcome_secret) == secrets, \
            f"epoch_secret {index}"
        assert ks.external_key_pair(suite, secrets.external_secret)[1] == h(epoch["external_pub"]), \
            f"external_pub {index}"
        exporter = epoch["exporter"]
        # The label is used as the string written in the file (it only looks like hex): that is how
        # the vectors were generated, and decoding it as hex does not reproduce the secret.
        out = ks.mls_exporter(suite, secrets.exporter_secret, exporter["label"], h(exporter["context"]),
                              exporter["length"])
        assert out == h(exporter["secret"]), f"exporter {index}"
        init_secret = secrets.init_secret
