"""Cipher suites: our HPKE agrees with pyhpke; every operation fails with our own errors."""

from __future__ import annotations

import os

import pytest
from pyhpke import AEADId, KDFId, KEMId
from pyhpke import CipherSuite as PyHpkeSuite

from mlscore.crypto import RFC9420_SUITES, SUPPORTED_SUITES, get_suite
from mlscore.errors import CryptoError, InvalidSignatureError, UnsupportedError

PYHPKE = {
    1: (KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM),
    2: (KEMId.DHKEM_P256_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM),
    3: (KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305),
    4: (KEMId.DHKEM_X448_HKDF_SHA512, KDFId.HKDF_SHA512, AEADId.AES256_GCM),
    5: (KEMId.DHKEM_P521_HKDF_SHA512, KDFId.HKDF_SHA512, AEADId.AES256_GCM),
    6: (KEMId.DHKEM_X448_HKDF_SHA512, KDFId.HKDF_SHA512, AEADId.CHACHA20_POLY1305),
    7: (KEMId.DHKEM_P384_HKDF_SHA384, KDFId.HKDF_SHA384, AEADId.AES256_GCM),
}


@pytest.mark.parametrize("suite_id", RFC9420_SUITES)  # pyhpke has no X-Wing: tests/test_xwing.py checks it
def test_hpke_interoperates_with_pyhpke(suite_id: int) -> None:
    suite = get_suite(suite_id)
    reference = PyHpkeSuite.new(*PYHPKE[suite_id])
    ikm = os.urandom(64)
    priv, pub = suite.derive_key_pair(ikm)
    assert reference.kem.derive_key_pair(ikm).public_key.to_public_bytes() == pub
    # pyhpke seals, we open; then the other way round.
    enc, sender = reference.create_sender_context(reference.kem.deserialize_public_key(pub), b"info")
    assert suite.hpke_open(priv, enc, b"info", b"aad", sender.seal(b"hello", b"aad")) == b"hello"
    enc, ciphertext = suite.hpke_seal(pub, b"info", b"aad", b"world")
    recipient = reference.create_recipient_context(enc, reference.kem.deserialize_private_key(priv), b"info")
    assert recipient.open(ciphertext, b"aad") == b"world"


@pytest.mark.parametrize("suite_id", SUPPORTED_SUITES)
def test_sign_encrypt_and_their_failures(suite_id: int) -> None:
    suite = get_suite(suite_id)
    signature_priv, signature_pub = suite.generate_signature_key_pair()
    signature = suite.sign_with_label(signature_priv, "label", b"content")
    suite.verify_with_label(signature_pub, "label", b"content", signature)
    with pytest.raises(InvalidSignatureError):
        suite.verify_with_label(signature_pub, "other label", b"content", signature)
    with pytest.raises(InvalidSignatureError):
        suite.verify_with_label(signature_pub, "label", b"content", signature[:-1] + bytes([signature[-1] ^ 1]))
    priv, pub = suite.generate_hpke_key_pair()
    kem_output, ciphertext = suite.encrypt_with_label(pub, "label", b"ctx", b"secret")
    assert suite.decrypt_with_label(priv, "label", b"ctx", kem_output, ciphertext) == b"secret"
    with pytest.raises(CryptoError):
        suite.decrypt_with_label(priv, "label", b"other ctx", kem_output, ciphertext)
    with pytest.raises(CryptoError):
        suite.decrypt_with_label(priv, "label", b"ctx", kem_output[:-1], ciphertext)
    secret = b"x" * suite.hash_len  # what TreeKEM hands DeriveKeyPair: a hash-sized secret
    assert suite.derive_key_pair(secret) == suite.derive_key_pair(secret)


def test_bad_keys_and_suites_raise_our_errors() -> None:
    suite = get_suite(1)
    with pytest.raises(UnsupportedError):
        get_suite(99)
    with pytest.raises(CryptoError):
        suite.encrypt_with_label(b"short", "l", b"", b"")
    with pytest.raises(CryptoError):
        suite.sign_with_label(b"short", "l", b"")
    with pytest.raises(CryptoError):
        suite.verify_with_label(b"\x00" * 5, "l", b"", b"sig")
    with pytest.raises(CryptoError):
        get_suite(2).verify_with_label(b"\x04" + bytes(64), "l", b"", b"sig")
    with pytest.raises(CryptoError):
        suite.aead_decrypt(bytes(16), bytes(12), b"", b"too short")
