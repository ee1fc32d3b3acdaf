"""ML-KEM (HPKE 0x0041/0x0042), ML-DSA signatures, and the post-quantum suites built from them (docs/pq.md).

Independent sources: the HPKE working group's ML-KEM vectors (tests/data/mlkem)
for the labelled DeriveKeyPair, decapsulation and the HPKE key schedule; ts-mls
for everything MLS does on suites 81-88 (tests/test_interop_tsmls.py: the raw
ML-KEM rule, ML-DSA-87 credentials and signatures, UpdatePaths both ways).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mls2p.testing import two_party
from mlscore.crypto import SIGNATURE_SCHEMES, TSMLS_PQ_SUITES, CipherSuite, get_suite, register_suite
from mlscore.errors import CryptoError, InvalidSignatureError, UnsupportedError
from mlscore.hpke_pq import MLKEM768, MLKEM1024, MlKem, labeled_derive

VECTORS = json.loads((Path(__file__).parent / "data" / "mlkem" / "hpke-pq-mlkem-vectors.json").read_text())
HASHES = {1: "sha256", 2: "sha384", 3: "sha512"}
AEADS = {1: "aes128gcm", 2: "aes256gcm", 3: "chacha20poly1305"}


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize("vector", VECTORS, ids=[f"kem{v['kem_id']:#06x}-kdf{v['kdf_id']}" for v in VECTORS])
def test_hpke_working_group_vectors_derive_key_pair_and_decapsulation(vector: dict) -> None:
    kem = MlKem(vector["kem_id"])
    assert kem.derive_key_pair(h(vector["ikmR"])) == (h(vector["skRm"]), h(vector["pkRm"]))
    assert kem.decap(h(vector["enc"]), h(vector["skRm"])) == h(vector["shared_secret"])


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["kdf_id"] in HASHES],
                         ids=lambda v: f"kem{v['kem_id']:#06x}")
def test_hpke_working_group_vectors_key_schedule_decryptions_and_exports(vector: dict) -> None:
    """The HPKE layer of a suite with this KEM (HKDF KDFs only: MLS's key schedule needs Extract and Expand)."""
    suite = CipherSuite(0xFFF0, "TEST", vector["kem_id"], HASHES[vector["kdf_id"]], AEADS[vector["aead_id"]],
                        SIGNATURE_SCHEMES["ed25519"])
    shared = MlKem(vector["kem_id"]).decap(h(vector["enc"]), h(vector["skRm"]))
    key, base_nonce, exporter = suite._hpke_schedule(shared, h(vector["info"]))
    assert (key, base_nonce, exporter) == (h(vector["key"]), h(vector["base_nonce"]), h(vector["exporter_secret"]))
    for sequence, encryption in enumerate(vector["encryptions"]):
        nonce = (int.from_bytes(base_nonce, "big") ^ sequence).to_bytes(12, "big")
        assert suite.aead_decrypt(key, nonce, h(encryption["aad"]), h(encryption["ct"])) == h(encryption["pt"])
    for export in vector["exports"]:
        value = suite._hpke_labeled_expand(exporter, b"sec", h(export["exporter_context"]), export["L"])
        assert value == h(export["exported_value"])


@pytest.mark.parametrize("kem_id", [MLKEM768, MLKEM1024])
def test_round_trip_and_the_raw_rule(kem_id: int) -> None:
    labelled, raw = MlKem(kem_id), MlKem(kem_id, "raw")
    seed = bytes(range(64))
    assert raw.derive_key_pair(seed) == labelled.key_pair_from_seed(seed)  # raw: the input is the seed
    assert labelled.derive_key_pair(seed) == labelled.key_pair_from_seed(
        labeled_derive(seed, kem_id, b"DeriveKeyPair", b"", 64))
    with pytest.raises(CryptoError, match="64-byte seed"):
        raw.derive_key_pair(bytes(48))  # what ts-mls's SHA-384 ML-KEM suites would do
    private, public = labelled.generate()
    secret, enc = labelled.encap(public)
    assert labelled.decap(enc, private) == secret
    with pytest.raises(CryptoError, match="public key has"):
        labelled.encap(public[:-1])
    with pytest.raises(CryptoError, match="ciphertext has"):
        labelled.decap(enc + b"\0", private)
    with pytest.raises(CryptoError, match="rule"):
        MlKem(kem_id, "plain")


@pytest.mark.parametrize("scheme", ["mldsa44", "mldsa65", "mldsa87"])
def test_ml_dsa_sign_with_label(scheme: str) -> None:
    suite = CipherSuite(0xFFF1, "TEST", MLKEM1024, "sha512", "aes256gcm", SIGNATURE_SCHEMES[scheme])
    private, public = suite.generate_signature_key_pair()
    assert len(private) == 32  # the seed
    signature = suite.sign_with_label(private, "LeafNodeTBS", b"content")
    suite.verify_with_label(public, "LeafNodeTBS", b"content", signature)
    with pytest.raises(InvalidSignatureError):
        suite.verify_with_label(public, "LeafNodeTBS", b"other content", signature)
    with pytest.raises(InvalidSignatureError):
        suite.verify_with_label(public, "KeyPackageTBS", b"content", signature)  # the label is signed
    with pytest.raises(CryptoError):
        suite.sign_with_label(private[:31], "LeafNodeTBS", b"content")
    with pytest.raises((CryptoError, InvalidSignatureError)):
        suite.verify_with_label(public[:-1], "LeafNodeTBS", b"content", signature)


@pytest.mark.parametrize("suite_id", TSMLS_PQ_SUITES)
def test_ts_mls_post_quantum_suites(suite_id: int) -> None:
    """ts-mls's suites 81-88 as ts-mls 1.6.4 defines them: SHA-512, HKDF-SHA512 for HPKE, ML-KEM by the raw
    rule, X-Wing by the plain one; and a two-party group on each runs."""
    suite = get_suite(suite_id)
    xwing = "XWING" in suite.name
    assert suite.hash_name == "sha512" and suite.kem_id == (0x647A if xwing else MLKEM1024)
    assert suite.derivation == ("plain" if xwing else "raw")
    assert suite.signature_scheme == ("mldsa87" if suite.name.endswith("MLDSA87") else "ed25519")
    alice, bob = two_party(suite_id)
    assert alice.epoch_authenticator == bob.epoch_authenticator


def test_ml_kem_suites_refuse_a_rule_they_do_not_have() -> None:
    with pytest.raises(UnsupportedError, match="rule"):
        register_suite(0xF0C1, "MLS_TEST_MLKEM", kem_id=MLKEM768, hash_name="sha512", aead="aes256gcm",
                       signature="ed25519", derivation="plain")
