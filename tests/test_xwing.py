"""X-Wing (HPKE KEM 0x647A) and suite 0x004D: published vectors, then the profile end to end on both transports.

Independent sources: the X-Wing draft's vectors and the HPKE working group's
vectors for KEM 0x647A (tests/data/xwing/README.md names both).  What is not
from an independent source: encapsulation (``cryptography`` has no
deterministic ML-KEM encapsulation, so it is checked by round trips), and
everything MLS does with the suite (no official RFC 9420 vectors cover it:
the group, profile and transport runs below are our own code on both sides).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mls2p.store import MemorySessionStore
from mls2p.testing import config, two_party
from mlscore.crypto import RFC9420_SUITES, XWING_SUITE, get_suite, register_suite
from mlscore.errors import CryptoError, UnsupportedError
from mlscore.xwing import CIPHERTEXT_LENGTH, PUBLIC_LENGTH, XWing
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls.testing import TlsPair

DATA = Path(__file__).parent / "data" / "xwing"
DRAFT = json.loads((DATA / "xwing-draft-vectors.json").read_text())
HPKE = json.loads((DATA / "hpke-pq-0x647a-vectors.json").read_text())
KEM = XWing()


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize("vector", DRAFT, ids=range(len(DRAFT)))
def test_draft_vectors_key_generation_and_decapsulation(vector: dict) -> None:
    assert KEM.key_pair_from_seed(h(vector["seed"])) == (h(vector["sk"]), h(vector["pk"]))
    assert KEM.decap(h(vector["ct"]), h(vector["sk"])) == h(vector["ss"])


@pytest.mark.parametrize("vector", HPKE, ids=[f"kdf{v['kdf_id']}" for v in HPKE])
def test_hpke_working_group_vectors_derive_key_pair_and_decapsulation(vector: dict) -> None:
    assert KEM.derive_key_pair(h(vector["ikmR"])) == (h(vector["skRm"]), h(vector["pkRm"]))
    assert KEM.decap(h(vector["enc"]), h(vector["skRm"])) == h(vector["shared_secret"])


def test_hpke_working_group_vector_of_suite_0x004d_opens_and_exports() -> None:
    """KEM 0x647A, HKDF-SHA256, ChaCha20-Poly1305: exactly suite 0x004D's HPKE."""
    vector = next(v for v in HPKE if (v["kdf_id"], v["aead_id"]) == (1, 3))
    suite = get_suite(XWING_SUITE)
    shared = KEM.decap(h(vector["enc"]), h(vector["skRm"]))
    key, base_nonce, exporter = suite._hpke_schedule(shared, h(vector["info"]))
    assert (key, base_nonce, exporter) == (h(vector["key"]), h(vector["base_nonce"]), h(vector["exporter_secret"]))
    for sequence, encryption in enumerate(vector["encryptions"]):
        nonce = (int.from_bytes(base_nonce, "big") ^ sequence).to_bytes(12, "big")
        assert nonce == h(encryption["nonce"])
        assert suite.aead_decrypt(key, nonce, h(encryption["aad"]), h(encryption["ct"])) == h(encryption["pt"])
    for export in vector["exports"]:
        value = suite._hpke_labeled_expand(exporter, b"sec", h(export["exporter_context"]), export["L"])
        assert value == h(export["exported_value"])
    # the first encryption is what single-shot HPKE (MLS's EncryptWithLabel) produces
    first = vector["encryptions"][0]
    assert suite.hpke_open(h(vector["skRm"]), h(vector["enc"]), h(vector["info"]), h(first["aad"]),
                           h(first["ct"])) == h(first["pt"])


def test_encapsulation_round_trips_and_refuses_bad_input() -> None:
    private, public = KEM.generate()
    assert len(private) == 32 and len(public) == PUBLIC_LENGTH
    shared, ciphertext = KEM.encap(public)
    assert len(ciphertext) == CIPHERTEXT_LENGTH and KEM.decap(ciphertext, private) == shared
    assert KEM.encap(public) != (shared, ciphertext)  # fresh randomness every time
    tampered = bytearray(ciphertext)
    tampered[0] ^= 1
    assert KEM.decap(bytes(tampered), private) != shared  # ML-KEM rejects implicitly: another secret
    for bad in (public[:-1], public + b"\x00", b""):
        with pytest.raises(CryptoError, match="public key has 1216 bytes"):
            KEM.encap(bad)
    with pytest.raises(CryptoError, match="ciphertext has 1120 bytes"):
        KEM.decap(ciphertext[:-1], private)
    with pytest.raises(CryptoError, match="private key has 32 bytes"):
        KEM.decap(ciphertext, private + b"\x00")
    suite = get_suite(XWING_SUITE)
    enc, sealed = suite.hpke_seal(public, b"info", b"aad", b"secret")
    with pytest.raises(CryptoError, match="HPKE decryption failed"):
        suite.hpke_open(private, bytes(tampered), b"info", b"aad", sealed)
    assert suite.hpke_open(private, enc, b"info", b"aad", sealed) == b"secret"


def test_another_x_wing_suite_under_a_provisional_code_point() -> None:
    suite = register_suite(0xF0A1, "MLS_256_XWING_AES256GCM_SHA512_Ed25519", kem_id=0x647A, hash_name="sha512",
                           aead="aes256gcm", signature="ed25519")
    assert register_suite(0xF0A1, "MLS_256_XWING_AES256GCM_SHA512_Ed25519", kem_id=0x647A, hash_name="sha512",
                          aead="aes256gcm", signature="ed25519") is suite  # idempotent
    alice, bob = two_party(0xF0A1)
    assert alice.epoch_authenticator == bob.epoch_authenticator and alice.suite.hash_len == 64
    with pytest.raises(UnsupportedError, match="already"):
        register_suite(0xF0A1, "SOMETHING_ELSE", kem_id=0x647A, hash_name="sha256", aead="aes256gcm",
                       signature="ed25519")
    with pytest.raises(UnsupportedError, match="RFC 9420"):
        register_suite(RFC9420_SUITES[0], "MINE", kem_id=0x647A, hash_name="sha256", aead="aes128gcm",
                       signature="ed25519")
    with pytest.raises(UnsupportedError, match="cannot build"):
        register_suite(0xF0A2, "NOPE", kem_id=0x9999, hash_name="sha256", aead="aes128gcm", signature="ed25519")


# -- the DeriveKeyPair rule is part of a suite ------------------------------------------------------------

def test_the_two_derive_key_pair_rules() -> None:
    """labelled (draft-ietf-hpke-pq) and plain (the X-Wing draft's "Use in HPKE": SHAKE256(ikm, 32)) give
    different node keys from one path secret, which is why a peer on the other rule refused every UpdatePath."""
    ikm = bytes(range(32))
    plain = XWing("plain").derive_key_pair(ikm)
    assert plain == KEM.key_pair_from_seed(hashlib.shake_256(ikm).digest(32))
    assert plain != KEM.derive_key_pair(ikm) and KEM.derivation == "labelled"
    with pytest.raises(CryptoError, match="rule"):
        XWing("shake")


@pytest.mark.parametrize(("suite_id", "rule", "hash_name", "aead"), [
    (0x004D, "plain", "sha256", "chacha20poly1305"),  # OpenMLS 0.9.0 (hpke-rs 0.7.0)
    (0x0053, "plain", "sha512", "aes256gcm"), (0x0054, "plain", "sha512", "chacha20poly1305")])  # ts-mls 1.6.4
def test_deployed_x_wing_suites(suite_id: int, rule: str, hash_name: str, aead: str) -> None:
    suite = get_suite(suite_id)
    assert (suite.kem_id, suite.derivation, suite.hash_name, suite.aead_name) == (0x647A, rule, hash_name, aead)
    ikm = b"path secret" * 3
    assert suite.derive_key_pair(ikm) == XWing(rule).derive_key_pair(ikm)
    alice, bob = two_party(suite_id)
    assert alice.epoch_authenticator == bob.epoch_authenticator


def test_the_rule_is_fixed_per_code_point() -> None:
    with pytest.raises(UnsupportedError, match="already"):  # 83 with the other rule is another suite
        register_suite(0x0053, "MLS_256_XWING_AES256GCM_SHA512_Ed25519", kem_id=0x647A, hash_name="sha512",
                       aead="aes256gcm", signature="ed25519", derivation="labelled")
    with pytest.raises(UnsupportedError, match="one DeriveKeyPair rule"):
        register_suite(0xF0B1, "MLS_128_DHKEMX25519_PLAIN", kem_id=0x20, hash_name="sha256", aead="aes128gcm",
                       signature="ed25519", derivation="plain")


# -- the two-party profile on suite 0x004D, end to end --------------------------------------------------

REKEYS = 20


def test_mlstls_phase1_20_rekeys_and_resumption_on_x_wing() -> None:
    pair = TlsPair(client_profile=config(b"client", XWING_SUITE), server_profile=config(b"server", XWING_SUITE))
    pair.client.connect()
    pair.pump()
    assert pair.client.epoch == pair.server.epoch == 1
    assert pair.client.session.group.suite.id == XWING_SUITE
    for index in range(REKEYS):
        (pair.client if index % 2 else pair.server).rekey()
        pair.pump()
        pair.client.send_data(b"after rekey %d" % index)
        pair.pump()
    assert pair.client.epoch == pair.server.epoch == 1 + REKEYS
    pair.reconnect()
    pair.client.connect()
    pair.pump()
    assert pair.client.endpoint.resumed and pair.client.epoch == pair.server.epoch == 3 + REKEYS
    pair.client.send_data(b"resumed")
    pair.pump()
    assert pair.received["server"].endswith(b"resumed")


def test_mlsquic_phase1_20_rekeys_and_resumption_on_x_wing() -> None:
    server_store, client_store = MemorySessionStore(), MemorySessionStore()
    client_profile = config(b"client", XWING_SUITE)
    server = server_configuration(profile=config(b"server", XWING_SUITE), store=server_store)
    first = QuicPair(client_configuration(profile=client_profile, store=client_store), server)
    first.run(first.established)
    for index in range(REKEYS):
        assert first.client.connection.rekey() if index % 2 == 0 else first.server.connection.rekey()
        first.run(lambda expected=2 + index: first.client.connection.mls_epoch == expected
                  and first.server.connection.mls_epoch == expected)
    assert first.echo_of(first.send(b"after 20 rekeys")) == b"after 20 rekeys"
    group_id = first.client.connection.mls_session.group_id
    second = QuicPair(client_configuration(profile=client_profile, store=client_store, resume_group_id=group_id),
                      server)
    second.run(second.established)
    assert second.client.connection.mls_epoch == 3 + REKEYS
    assert second.client.connection.mls_session.group.suite.id == XWING_SUITE
    assert second.echo_of(second.send(b"resumed")) == b"resumed"


# -- self-generated RFC 9420 vectors (not independent: our own code wrote them) -----------------------------

SELF = DATA / "self-generated"


@pytest.mark.parametrize("name", ["crypto-basics", "welcome"])
def test_self_generated_rfc9420_vectors_of_suite_0x004d(name: str) -> None:
    from interop.vectors import checker

    entries = json.loads((SELF / f"{name}.json").read_text())
    assert entries and all(entry["cipher_suite"] == XWING_SUITE for entry in entries)
    for entry in entries:
        checker(name)(entry)
