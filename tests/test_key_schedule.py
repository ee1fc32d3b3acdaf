"""Key schedule: vectors, GroupContext encoding, the joiner path, exporter, transcript hashes, tags."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interop.vectors import default_dir, run_file
from mlscore.codec import Reader, Writer
from mlscore.crypto import RFC9420_SUITES, SUPPORTED_SUITES, get_suite
from mlscore.errors import DecodeError, ValidationError
from mlscore.extensions import Extension
from mlscore.leaf_node import PROTOCOL_VERSION_MLS10
from mlscore.schedule import key_schedule as ks
from mlscore.schedule.key_schedule import GroupContext

SUITE = get_suite(1)
CONTEXT = GroupContext(PROTOCOL_VERSION_MLS10, 1, b"group", 7, b"\x01" * 32, b"\x02" * 32,
                       (Extension(0x0001, b"app"), Extension(0xFF00, b"")))


@pytest.mark.skipif(not default_dir().is_dir(), reason=f"test vectors not found at {default_dir()}")
@pytest.mark.parametrize("name", ["key-schedule", "transcript-hashes"])
def test_vectors(name: str) -> None:
    outcomes = list(run_file(name))
    assert {o.cipher_suite for o in outcomes} == set(RFC9420_SUITES)
    assert [o for o in outcomes if o.status != "passed"] == []


def test_group_context_round_trip() -> None:
    encoded = CONTEXT.to_bytes()
    assert GroupContext.from_bytes(encoded) == CONTEXT
    assert encoded[:4] == b"\x00\x01\x00\x01"  # version mls10, suite 1
    with pytest.raises(DecodeError):
        GroupContext.from_bytes(encoded[:-1])
    with pytest.raises(DecodeError):
        GroupContext.from_bytes(encoded + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_group_context_decoder_raises_only_decode_error(data: bytes) -> None:
    """Anything the strict decoder accepts is canonical: it re-encodes to the same bytes."""
    try:
        value = GroupContext.from_bytes(data)
    except DecodeError:
        return
    assert value.to_bytes() == data


@pytest.mark.parametrize("suite_id", SUPPORTED_SUITES)
def test_joiner_path_matches_member_path(suite_id: int) -> None:
    suite = get_suite(suite_id)
    n = suite.hash_len
    context = CONTEXT.to_bytes()
    joiner, secrets = ks.derive_epoch_secrets(suite, b"\x03" * n, b"\x04" * n, b"\x05" * n, context)
    assert ks.epoch_secrets_from_joiner(suite, joiner, b"\x05" * n, context) == secrets
    assert ks.welcome_secret(suite, joiner, b"\x05" * n) == secrets.welcome_secret
    epoch = ks.epoch_secret(suite, joiner, b"\x05" * n, context)
    assert ks.secrets_from_epoch_secret(suite, epoch, secrets.welcome_secret) == secrets
    key, nonce = ks.welcome_key_nonce(suite, secrets.welcome_secret)
    assert (len(key), len(nonce)) == (suite.aead_key_len, suite.aead_nonce_len)
    # Any change of the GroupContext changes every secret.
    _, other = ks.derive_epoch_secrets(suite, b"\x03" * n, b"\x04" * n, b"\x05" * n, context + b"\x00")
    assert other.exporter_secret != secrets.exporter_secret and other.init_secret != secrets.init_secret


def test_epoch_secrets_hide_secrets_and_persist() -> None:
    _, secrets = ks.derive_epoch_secrets(SUITE, bytes(32), bytes(32), bytes(32), CONTEXT.to_bytes())
    assert secrets.exporter_secret.hex() not in repr(secrets)
    w = Writer()
    secrets.encode(w)
    assert ks.EpochSecrets.decode(Reader(w.getvalue())) == secrets


def test_exporter_hashes_the_context() -> None:
    exporter_secret = b"\x07" * 32
    out = ks.mls_exporter(SUITE, exporter_secret, "label", b"ctx", 40)
    expected = SUITE.expand_with_label(SUITE.derive_secret(exporter_secret, b"label"), "exported",
                                       SUITE.hash(b"ctx"), 40)
    assert out == expected
    broken = SUITE.expand_with_label(SUITE.derive_secret(exporter_secret, b"label"), "exported", b"ctx", 40)
    assert out != broken
    assert ks.mls_exporter(SUITE, exporter_secret, "label", b"ctx2", 40) != out
    assert ks.mls_exporter(SUITE, exporter_secret, "other", b"ctx", 40) != out


def test_transcript_hashes_and_confirmation_tag() -> None:
    confirmed = ks.confirmed_transcript_hash(SUITE, b"\x01" * 32, b"input")
    assert confirmed == SUITE.hash(b"\x01" * 32 + b"input")
    tag = ks.confirmation_tag(SUITE, b"\x09" * 32, confirmed)
    assert tag == SUITE.mac(b"\x09" * 32, confirmed)
    # InterimTranscriptHashInput is the tag as opaque<V>: one length byte for a 32-byte MAC.
    assert ks.interim_transcript_hash(SUITE, confirmed, tag) == SUITE.hash(confirmed + b"\x20" + tag)
    ks.verify_confirmation_tag(SUITE, b"\x09" * 32, confirmed, tag)
    with pytest.raises(ValidationError):
        ks.verify_confirmation_tag(SUITE, b"\x09" * 32, confirmed, tag[:-1] + bytes([tag[-1] ^ 1]))
    with pytest.raises(ValidationError):
        ks.verify_confirmation_tag(SUITE, b"\x08" * 32, confirmed, tag)


@pytest.mark.parametrize("suite_id", [1, 2])
def test_external_init_secret_matches_the_joiners(suite_id: int) -> None:
    suite = get_suite(suite_id)
    _, secrets = ks.derive_epoch_secrets(suite, bytes(suite.hash_len), bytes(suite.hash_len),
                                         bytes(suite.hash_len), CONTEXT.to_bytes())
    _, external_pub = ks.external_key_pair(suite, secrets.external_secret)
    kem_output, sent = suite.hpke_export_sender(external_pub, b"", b"MLS 1.0 external init secret", suite.hash_len)
    assert ks.external_init_secret(suite, secrets.external_secret, kem_output) == sent
