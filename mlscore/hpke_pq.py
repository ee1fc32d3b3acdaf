"""ML-KEM as an HPKE KEM (draft-ietf-hpke-pq): KEM ids 0x0041 (ML-KEM-768) and 0x0042 (ML-KEM-1024).

ML-KEM comes from ``cryptography`` (FIPS 203).  draft-ietf-hpke-pq maps it onto
HPKE's KEM interface with no combiner: the encapsulation key is the public key,
the ciphertext is ``enc``, the 32-byte ML-KEM shared secret is HPKE's, and a
private key is the 64-byte seed ``d || z`` that key generation expands.

DeriveKeyPair (what TreeKEM does to every path secret) has two rules in use,
and the rule is part of a cipher suite's definition (docs/pq.md):

* ``"labelled"``: the draft's ``SHAKE256.LabeledDerive(ikm, "DeriveKeyPair",
  "", 64)`` is the seed (checked against the HPKE working group's vectors);
* ``"raw"``: the input *is* the seed, and must be 64 bytes, as hpke-js
  (``@hpke/ml-kem`` 0.3.0) does, so ts-mls's ML-KEM suites work only with a
  64-byte hash (SHA-512).

:func:`labeled_derive` is the draft's single-stage KDF, which X-Wing's
labelled rule uses too.  ML-KEM-512 is not offered: ``cryptography`` has none.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric import mlkem

from .errors import CryptoError

HPKE_VERSION = b"HPKE-v1"
SEED_LENGTH = 64
SHARED_SECRET_LENGTH = 32
DERIVATION_RULES = ("labelled", "raw")

_PARAMETER_SETS: dict[int, tuple[str, type[mlkem.MLKEM768PrivateKey] | type[mlkem.MLKEM1024PrivateKey],
                                 type[mlkem.MLKEM768PublicKey] | type[mlkem.MLKEM1024PublicKey], int, int]] = {
    0x0041: ("ML-KEM-768", mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey, 1184, 1088),
    0x0042: ("ML-KEM-1024", mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey, 1568, 1568),
}
MLKEM768, MLKEM1024 = 0x0041, 0x0042


def labeled_derive(ikm: bytes, kem_id: int, label: bytes, context: bytes, length: int) -> bytes:
    """draft-ietf-hpke-pq's SHAKE256.LabeledDerive with suite id ``KEM || kem_id``."""
    suite_id = b"KEM" + kem_id.to_bytes(2, "big")
    labeled = (ikm + HPKE_VERSION + suite_id + len(label).to_bytes(2, "big") + label
               + length.to_bytes(2, "big") + context)
    return hashlib.shake_256(labeled).digest(length)


class MlKem:
    """The HPKE KEM interface mlscore's cipher suites use (like its DHKEM and X-Wing), for ML-KEM."""

    private_len = SEED_LENGTH

    def __init__(self, kem_id: int, derivation: str = "labelled") -> None:
        if kem_id not in _PARAMETER_SETS:
            raise CryptoError(f"no ML-KEM parameter set has HPKE KEM id {kem_id:#06x}")
        if derivation not in DERIVATION_RULES:
            raise CryptoError(f"ML-KEM DeriveKeyPair rule must be one of {DERIVATION_RULES}, not {derivation!r}")
        self.kem_id = kem_id
        self.derivation = derivation
        self.name, self._private_cls, self._public_cls, self.public_len, self.enc_len = _PARAMETER_SETS[kem_id]

    def __repr__(self) -> str:
        return f"MlKem({self.name}, derivation={self.derivation!r})"

    def _private(self, seed: bytes) -> mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey:
        if len(seed) != SEED_LENGTH:
            raise CryptoError(f"an {self.name} private key is a {SEED_LENGTH}-byte seed, not {len(seed)} bytes")
        return self._private_cls.from_seed_bytes(seed)

    def public_key_of(self, private: bytes) -> bytes:
        return self._private(private).public_key().public_bytes_raw()

    def key_pair_from_seed(self, seed: bytes) -> tuple[bytes, bytes]:
        return bytes(seed), self.public_key_of(seed)

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """HPKE DeriveKeyPair by this instance's rule."""
        if self.derivation == "raw":
            return self.key_pair_from_seed(ikm)
        return self.key_pair_from_seed(labeled_derive(ikm, self.kem_id, b"DeriveKeyPair", b"", SEED_LENGTH))

    def generate(self) -> tuple[bytes, bytes]:
        return self.key_pair_from_seed(os.urandom(SEED_LENGTH))

    def encap(self, public: bytes) -> tuple[bytes, bytes]:
        """(shared secret, ciphertext) for ``public``."""
        if len(public) != self.public_len:
            raise CryptoError(f"an {self.name} public key has {self.public_len} bytes, not {len(public)}")
        try:
            return self._public_cls.from_public_bytes(public).encapsulate()
        except ValueError as exc:  # FIPS 203's encapsulation key check
            raise CryptoError(f"invalid {self.name} public key: {exc}") from None

    def decap(self, ciphertext: bytes, private: bytes) -> bytes:
        if len(ciphertext) != self.enc_len:
            raise CryptoError(f"an {self.name} ciphertext has {self.enc_len} bytes, not {len(ciphertext)}")
        return self._private(private).decapsulate(ciphertext)  # implicit rejection: never raises on a bad ct
