"""PSK identifiers and the psk_secret chain (RFC 9420 section 8.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interop.vectors import default_dir, run_file
from mlscore.codec import Writer
from mlscore.crypto import RFC9420_SUITES, SUPPORTED_SUITES, get_suite
from mlscore.errors import DecodeError, ValidationError
from mlscore.schedule.psk import PreSharedKeyID, PSKLabel, PSKType, ResumptionPSKUsage, compute_psk_secret

SUITE = get_suite(1)
EXTERNAL = PreSharedKeyID.external(b"psk-id", b"\x01" * 32)
RESUMPTION = PreSharedKeyID.resumption(b"group", 9, b"\x02" * 32, ResumptionPSKUsage.BRANCH)


@pytest.mark.skipif(not default_dir().is_dir(), reason=f"test vectors not found at {default_dir()}")
def test_vectors() -> None:
    outcomes = list(run_file("psk_secret"))
    assert {o.cipher_suite for o in outcomes} == set(RFC9420_SUITES)
    assert [o for o in outcomes if o.status != "passed"] == []


def test_psk_id_encodings() -> None:
    assert EXTERNAL.to_bytes() == b"\x01\x06psk-id\x20" + b"\x01" * 32
    assert RESUMPTION.to_bytes() == b"\x02\x03\x05group" + (9).to_bytes(8, "big") + b"\x20" + b"\x02" * 32
    for psk_id in (EXTERNAL, RESUMPTION):
        assert PreSharedKeyID.from_bytes(psk_id.to_bytes()) == psk_id
    label = PSKLabel(RESUMPTION, 1, 2)
    assert PSKLabel.from_bytes(label.to_bytes()) == label
    with pytest.raises(DecodeError, match="PSK type"):
        PreSharedKeyID.from_bytes(b"\x04" + EXTERNAL.to_bytes()[1:])
    with pytest.raises(DecodeError, match="usage"):
        PreSharedKeyID.from_bytes(b"\x02\x04" + RESUMPTION.to_bytes()[2:])
    assert RESUMPTION.psktype is PSKType.RESUMPTION


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_psk_id_decoder_raises_only_decode_error(data: bytes) -> None:
    """Anything the strict decoder accepts is canonical: it re-encodes to the same bytes."""
    try:
        value = PreSharedKeyID.from_bytes(data)
    except DecodeError:
        return
    assert value.to_bytes() == data


def reference_chain(psks: list[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """Section 8.4 written out step by step, with PSKLabel encoded by hand."""
    zero = bytes(SUITE.hash_len)
    secret = zero
    for index, (psk_id, psk) in enumerate(psks):
        label = Writer().raw(psk_id.to_bytes()).u16(index).u16(len(psks)).getvalue()
        extracted = SUITE.kdf_extract(zero, psk)
        psk_input = SUITE.kdf_expand(extracted, Writer().u16(32).opaque(b"MLS 1.0 derived psk").opaque(label)
                                     .getvalue(), 32)
        secret = SUITE.kdf_extract(psk_input, secret)
    return secret


@pytest.mark.parametrize("suite_id", SUPPORTED_SUITES)
def test_no_psk_is_all_zeros(suite_id: int) -> None:
    suite = get_suite(suite_id)
    assert compute_psk_secret(suite, []) == bytes(suite.hash_len)


def test_one_and_two_psks() -> None:
    one = [(EXTERNAL, b"external value")]
    two = [*one, (RESUMPTION, b"\x03" * 32)]
    assert compute_psk_secret(SUITE, one) == reference_chain(one) != bytes(32)
    assert compute_psk_secret(SUITE, two) == reference_chain(two) != compute_psk_secret(SUITE, one)
    # Order, values and identifiers all matter.
    assert compute_psk_secret(SUITE, two[::-1]) != compute_psk_secret(SUITE, two)
    assert compute_psk_secret(SUITE, [(EXTERNAL, b"other value")]) != compute_psk_secret(SUITE, one)
    renamed = PreSharedKeyID.external(b"psk-id2", b"\x01" * 32)
    assert compute_psk_secret(SUITE, [(renamed, b"external value")]) != compute_psk_secret(SUITE, one)


def test_psk_nonce_must_be_nh_bytes() -> None:
    short = PreSharedKeyID.external(b"psk-id", b"\x01" * 16)
    with pytest.raises(ValidationError, match="psk_nonce"):
        compute_psk_secret(SUITE, [(short, b"value")])
    with pytest.raises(ValidationError):
        compute_psk_secret(get_suite(5), [(EXTERNAL, b"value")])  # 32-byte nonce, Nh = 64


# -- application PSKs (draft-ietf-mls-extensions section 4.5) ---------------------------------------

APPLICATION = PreSharedKeyID.application(0x0006, b"\x07" * 32, b"\x03" * 32)


def test_application_psk_id_encoding() -> None:
    assert APPLICATION.to_bytes() == b"\x03\x00\x06\x20" + b"\x07" * 32 + b"\x20" + b"\x03" * 32
    assert PreSharedKeyID.from_bytes(APPLICATION.to_bytes()) == APPLICATION
    assert APPLICATION.psktype is PSKType.APPLICATION and APPLICATION.component_id == 6


def test_an_application_psk_in_a_welcome_and_a_commit() -> None:
    """A joiner and a member resolve an application PSK through ``GroupConfig.application_psks``; a member who
    does not know it refuses the commit and stays where it was."""
    from mls2p.testing import bundle
    from mlscore.group import Group, GroupConfig
    from mlscore.messages import Add, PreSharedKey

    values = {APPLICATION: b"the component's secret"}
    knows = GroupConfig(application_psks=values.get)
    alice = Group.create(bundle(b"alice"), config=knows)
    bob_bundle = bundle(b"bob")
    added = alice.commit([Add(bob_bundle.key_package), PreSharedKey(APPLICATION)], force_path=False)
    assert added.welcome is not None
    with pytest.raises(ValidationError, match="unknown application PSK"):
        Group.join(added.welcome.to_bytes(), bob_bundle, config=GroupConfig())
    bob = Group.join(added.welcome.to_bytes(), bob_bundle, config=knows)
    alice = added.group
    assert bob.epoch_authenticator == alice.epoch_authenticator

    second = PreSharedKeyID.application(0x0006, b"\x08" * 32, b"\x04" * 32)
    values[second] = b"the next one"
    commit = bob.commit([PreSharedKey(second)])
    processed = alice.process(commit.message.to_bytes())
    assert processed.group.epoch_authenticator == commit.group.epoch_authenticator  # type: ignore[attr-defined]
    forgetful = Group.join(added.welcome.to_bytes(), bob_bundle, config=GroupConfig(
        application_psks={APPLICATION: values[APPLICATION]}.get))  # joined, but never learns ``second``
    epoch = forgetful.epoch
    with pytest.raises(ValidationError, match="unknown application PSK"):
        forgetful.process(alice.commit([PreSharedKey(second)]).message.to_bytes())
    assert forgetful.epoch == epoch
