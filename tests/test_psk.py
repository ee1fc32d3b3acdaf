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
        PreSharedKeyID.from_bytes(b"\x03" + EXTERNAL.to_bytes()[1:])
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
