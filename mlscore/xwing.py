"""X-Wing (ML-KEM-768 + X25519) as an HPKE KEM: HPKE KEM id 0x647A, "MLKEM768-X25519".

X-Wing is draft-connolly-cfrg-xwing-kem; draft-irtf-cfrg-concrete-hybrid-kems
calls the same construction MLKEM768-X25519 and draft-ietf-hpke-pq defines its
use in HPKE.  ML-KEM-768 comes from ``cryptography`` (FIPS 203); the rest is
X25519, SHAKE256 and SHA3-256 as the drafts define them:

* a private key is a 32-byte seed; ``SHAKE256(seed, 96)`` expands it to the
  ML-KEM-768 key-generation seed (d || z, 64 bytes) and an X25519 private key;
* a public key is the ML-KEM-768 encapsulation key (1,184 bytes) || the X25519
  public key (32), a ciphertext the ML-KEM-768 ciphertext (1,088) || the
  ephemeral X25519 public key (32);
* the shared secret is ``SHA3-256(ss_M || ss_X || ct_X || pk_X || label)``;
* HPKE's DeriveKeyPair(ikm) is ``SHAKE256.LabeledDerive(ikm, "DeriveKeyPair",
  "", 32)`` (draft-ietf-hpke-pq), then the key pair of that seed: the
  ``"labelled"`` rule.  The X-Wing draft's own "Use in HPKE" section takes the
  seed as plain ``SHAKE256(ikm, 32)``, and deployed stacks do (ts-mls with
  hpke-js): the ``"plain"`` rule.  The two give different node keys from the
  same path secret, so the rule is part of a cipher suite's definition
  (:data:`DERIVATION_RULES`, docs/pq.md).

Checked against the X-Wing draft's vectors and the HPKE working group's
vectors for KEM 0x647A (tests/test_xwing.py, data in tests/data/xwing).
Encapsulation uses fresh randomness inside ``cryptography``, which offers no
deterministic variant: it is checked by round trips, decapsulation and key
derivation by the published values.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import CryptoError
from .hpke_pq import labeled_derive

KEM_ID = 0x647A
LABEL = b"\\.//^\\"  # the draft's ASCII-art X-Wing, 5c2e2f2f5e5c
SEED_LENGTH = 32
MLKEM_PUBLIC_LENGTH = 1184
MLKEM_CIPHERTEXT_LENGTH = 1088
PUBLIC_LENGTH = MLKEM_PUBLIC_LENGTH + 32
CIPHERTEXT_LENGTH = MLKEM_CIPHERTEXT_LENGTH + 32
SHARED_SECRET_LENGTH = 32
DERIVATION_RULES = ("labelled", "plain")


def _x25519_public(private: x25519.X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _expand(seed: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey, bytes]:
    """(ML-KEM key, X25519 key, public key) of a 32-byte private seed."""
    if len(seed) != SEED_LENGTH:
        raise CryptoError(f"an X-Wing private key has {SEED_LENGTH} bytes, not {len(seed)}")
    expanded = hashlib.shake_256(seed).digest(96)
    ml_kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    x_private = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
    return ml_kem, x_private, ml_kem.public_key().public_bytes_raw() + _x25519_public(x_private)


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + LABEL).digest()


class XWing:
    """The HPKE KEM interface mlscore's cipher suites use (like its DHKEM), for X-Wing."""

    kem_id = KEM_ID
    private_len = SEED_LENGTH
    public_len = PUBLIC_LENGTH
    enc_len = CIPHERTEXT_LENGTH

    def __init__(self, derivation: str = "labelled") -> None:
        if derivation not in DERIVATION_RULES:
            raise CryptoError(f"X-Wing DeriveKeyPair rule must be one of {DERIVATION_RULES}, not {derivation!r}")
        self.derivation = derivation

    def __repr__(self) -> str:
        return f"XWing(derivation={self.derivation!r})"

    def public_key_of(self, private: bytes) -> bytes:
        return _expand(private)[2]

    def key_pair_from_seed(self, seed: bytes) -> tuple[bytes, bytes]:
        """The draft's GenerateKeyPairDerand: (seed, public key)."""
        return bytes(seed), self.public_key_of(seed)

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """HPKE DeriveKeyPair by this instance's rule, then the seed's key pair."""
        if self.derivation == "plain":  # the X-Wing draft's "Use in HPKE": SHAKE256(ikm, 32)
            return self.key_pair_from_seed(hashlib.shake_256(ikm).digest(SEED_LENGTH))
        # draft-ietf-hpke-pq: SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", 32)
        return self.key_pair_from_seed(labeled_derive(ikm, KEM_ID, b"DeriveKeyPair", b"", SEED_LENGTH))

    def generate(self) -> tuple[bytes, bytes]:
        return self.key_pair_from_seed(os.urandom(SEED_LENGTH))

    def encap(self, public: bytes) -> tuple[bytes, bytes]:
        """(shared secret, ciphertext) for ``public``."""
        if len(public) != PUBLIC_LENGTH:
            raise CryptoError(f"an X-Wing public key has {PUBLIC_LENGTH} bytes, not {len(public)}")
        pk_m, pk_x = public[:MLKEM_PUBLIC_LENGTH], public[MLKEM_PUBLIC_LENGTH:]
        try:
            ss_m, ct_m = mlkem.MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
            ephemeral = x25519.X25519PrivateKey.generate()
            ss_x = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(pk_x))
        except ValueError as exc:  # the ML-KEM encapsulation key check, or an all-zero X25519 result
            raise CryptoError(f"invalid X-Wing public key: {exc}") from None
        ct_x = _x25519_public(ephemeral)
        return _combine(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x

    def decap(self, ciphertext: bytes, private: bytes) -> bytes:
        if len(ciphertext) != CIPHERTEXT_LENGTH:
            raise CryptoError(f"an X-Wing ciphertext has {CIPHERTEXT_LENGTH} bytes, not {len(ciphertext)}")
        ml_kem, x_private, public = _expand(private)
        ct_m, ct_x = ciphertext[:MLKEM_CIPHERTEXT_LENGTH], ciphertext[MLKEM_CIPHERTEXT_LENGTH:]
        try:
            ss_m = ml_kem.decapsulate(ct_m)  # implicit rejection: a bad ct_m gives a pseudorandom secret
            ss_x = x_private.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        except ValueError as exc:
            raise CryptoError(f"X-Wing decapsulation failed: {exc}") from None
        return _combine(ss_m, ss_x, ct_x, public[MLKEM_PUBLIC_LENGTH:])
