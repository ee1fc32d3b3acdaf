"""The seven cipher suites of RFC 9420 (section 5.1), the X-Wing suite 0x004D, and their labelled operations.

HPKE (RFC 9180, base mode, DHKEM) is implemented here directly on
`cryptography` and the standard library's HMAC: it is a few dozen lines, it
gives us the exporter interface that external commits need, and it runs
several times faster than going through a generic HPKE object per call.
The implementation is checked byte for byte by the official vectors
(crypto-basics, treekem, welcome) and against `pyhpke` in the tests.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Protocol, cast

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed  # noqa: F401  (documented alternative)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .codec import Writer, encode_varint
from .errors import CryptoError, InvalidSignatureError, UnsupportedError
from .hpke_pq import MLKEM768, MLKEM1024, MlKem
from .xwing import XWing

MLS_PREFIX = b"MLS 1.0 "
HPKE_VERSION = b"HPKE-v1"

# `cryptography` key objects of the HPKE KEMs and of the signature schemes.
_KemPrivateKey = x25519.X25519PrivateKey | x448.X448PrivateKey | ec.EllipticCurvePrivateKey
_KemPublicKey = x25519.X25519PublicKey | x448.X448PublicKey | ec.EllipticCurvePublicKey
_MlDsaPrivateKey = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
_MlDsaPublicKey = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
_SignaturePrivateKey = ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | ec.EllipticCurvePrivateKey | _MlDsaPrivateKey
_SignaturePublicKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey | ec.EllipticCurvePublicKey | _MlDsaPublicKey


def _label(label: bytes | str) -> bytes:
    return MLS_PREFIX + (label.encode() if isinstance(label, str) else label)


@functools.lru_cache(maxsize=256)
def _opaque_label(label: bytes | str) -> bytes:
    """``opaque label<V> = "MLS 1.0 " + label``, encoded: labels are a few dozen protocol constants."""
    return Writer().opaque(_label(label)).getvalue()


@functools.lru_cache(maxsize=256)
def _derive_secret_block(hash_len: int, label: bytes | str) -> bytes:
    """The HKDF-Expand input of DeriveSecret: KDFLabel(Nh, label, "") and the block counter 1."""
    return hash_len.to_bytes(2, "big") + _opaque_label(label) + b"\x00\x01"


# -- KDF on the standard library's HMAC (C speed, no object churn) -------------

def _extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt, ikm, hash_name)


def _expand(hash_name: str, hash_len: int, prk: bytes, info: bytes, length: int) -> bytes:
    if length <= hash_len:  # one block: the common case (every secret, key and nonce of MLS)
        return hmac.digest(prk, info + b"\x01", hash_name)[:length]
    if length > 255 * hash_len:
        raise CryptoError(f"cannot expand {length} bytes with a {hash_len}-byte hash")
    output = b""
    block = b""
    counter = 1
    while len(output) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), hash_name)
        output += block
        counter += 1
    return output[:length]


# -- DHKEM (RFC 9180 section 4.1) ------------------------------------------------

class _KeyCodec:
    """RFC 9420 wire forms of keys: raw for X/Ed curves, SEC1 point / fixed-width scalar for NIST curves."""

    curve: type[ec.EllipticCurve] | None
    private_len: int

    def serialize_public(self, key: _KemPublicKey | _SignaturePublicKey) -> bytes:
        if self.curve is None:
            return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

    def serialize_private(self, key: _KemPrivateKey | _SignaturePrivateKey) -> bytes:
        if self.curve is None:
            return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        # a curve is set only for the NIST suites, whose keys are EllipticCurvePrivateKey
        ec_key = cast(ec.EllipticCurvePrivateKey, key)
        return ec_key.private_numbers().private_value.to_bytes(self.private_len, "big")


@dataclass(frozen=True)
class _Kem(_KeyCodec):
    kem_id: int
    hash_name: str
    hash_len: int
    secret_len: int  # Nsecret
    private_len: int  # Nsk
    curve: type[ec.EllipticCurve] | None  # None for X25519/X448
    x_cls: type | None = None  # x25519.X25519PrivateKey / x448.X448PrivateKey
    x_pub_cls: type | None = None

    @property
    def suite_id(self) -> bytes:
        return b"KEM" + self.kem_id.to_bytes(2, "big")

    def labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return _extract(self.hash_name, salt, HPKE_VERSION + self.suite_id + label + ikm)

    def labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        data = length.to_bytes(2, "big") + HPKE_VERSION + self.suite_id + label + info
        return _expand(self.hash_name, self.hash_len, prk, data, length)

    # keys as bytes <-> objects
    def private_key(self, data: bytes) -> _KemPrivateKey:
        try:
            if self.curve is None:
                return self.x_cls.from_private_bytes(data)  # type: ignore[union-attr]
            if not 0 < len(data) <= self.private_len:
                raise ValueError("wrong private key length")
            return ec.derive_private_key(int.from_bytes(data, "big"), self.curve())
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid HPKE private key: {exc}") from None

    def public_key(self, data: bytes) -> _KemPublicKey:
        try:
            if self.curve is None:
                return self.x_pub_cls.from_public_bytes(data)  # type: ignore[union-attr]
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve(), data)
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid HPKE public key: {exc}") from None

    def dh(self, private: _KemPrivateKey, public: _KemPublicKey) -> bytes:
        try:
            if self.curve is None:
                # X25519 or X448: both keys come from this KEM's x_cls / x_pub_cls, so they share a curve
                x_private = cast("x25519.X25519PrivateKey | x448.X448PrivateKey", private)
                return x_private.exchange(public)  # type: ignore[arg-type]  # the curve pairing is not in the types
            # a curve is set only for the NIST KEMs, whose keys are EllipticCurve keys
            ec_private = cast(ec.EllipticCurvePrivateKey, private)
            return ec_private.exchange(ec.ECDH(), cast(ec.EllipticCurvePublicKey, public))
        except ValueError as exc:
            raise CryptoError(f"Diffie-Hellman failed: {exc}") from None

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        dkp_prk = self.labeled_extract(b"", b"dkp_prk", ikm)
        if self.curve is None:
            sk = self.labeled_expand(dkp_prk, b"sk", b"", self.private_len)
            private = self.private_key(sk)
        else:
            # the concrete curve classes set ``name`` as a class attribute (a property on EllipticCurve)
            order = _CURVE_ORDERS[cast(str, self.curve.name)]
            mask = 0x01 if self.curve is ec.SECP521R1 else 0xFF
            for counter in range(256):
                candidate = bytearray(self.labeled_expand(dkp_prk, b"candidate", bytes([counter]),
                                                          self.private_len))
                candidate[0] &= mask
                value = int.from_bytes(candidate, "big")
                if 0 < value < order:
                    private = ec.derive_private_key(value, self.curve())
                    break
            else:  # pragma: no cover - probability 2^-256
                raise CryptoError("DeriveKeyPair found no valid scalar")
        return self.serialize_private(private), self.serialize_public(private.public_key())

    @property
    def public_len(self) -> int:
        return _DHKEM_PUBLIC_LENGTHS[self.kem_id]

    def public_key_of(self, private: bytes) -> bytes:
        return self.serialize_public(self.private_key(private).public_key())

    def generate(self) -> _KemPrivateKey:
        if self.curve is None:
            return self.x_cls.generate()  # type: ignore[union-attr]
        return ec.generate_private_key(self.curve())

    def _shared_secret(self, dh: bytes, kem_context: bytes) -> bytes:
        eae_prk = self.labeled_extract(b"", b"eae_prk", dh)
        return self.labeled_expand(eae_prk, b"shared_secret", kem_context, self.secret_len)

    def encap(self, public_bytes: bytes) -> tuple[bytes, bytes]:
        recipient = self.public_key(public_bytes)
        ephemeral = self.generate()
        enc = self.serialize_public(ephemeral.public_key())
        return self._shared_secret(self.dh(ephemeral, recipient), enc + public_bytes), enc

    def decap(self, enc: bytes, private_bytes: bytes) -> bytes:
        private = self.private_key(private_bytes)
        ephemeral = self.public_key(enc)
        own_public = self.serialize_public(private.public_key())
        return self._shared_secret(self.dh(private, ephemeral), enc + own_public)


_CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AE"
                     "CEC196ACCC52973", 16),
    "secp521r1": int("01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
                     "FFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E913"
                     "86409", 16),
}

_DHKEM_PUBLIC_LENGTHS = {0x10: 65, 0x11: 97, 0x12: 133, 0x20: 32, 0x21: 56}


class HpkeKem(Protocol):
    """What a cipher suite needs of its HPKE KEM: DHKEM above, X-Wing in :mod:`mlscore.xwing`."""

    @property
    def kem_id(self) -> int: ...

    @property
    def private_len(self) -> int: ...

    @property
    def public_len(self) -> int: ...

    def encap(self, public: bytes, /) -> tuple[bytes, bytes]: ...

    def decap(self, enc: bytes, private: bytes, /) -> bytes: ...

    def derive_key_pair(self, ikm: bytes, /) -> tuple[bytes, bytes]: ...

    def public_key_of(self, private: bytes, /) -> bytes: ...


_KEMS: dict[int, HpkeKem] = {
    0x0010: _Kem(0x0010, "sha256", 32, 32, 32, ec.SECP256R1),
    0x0011: _Kem(0x0011, "sha384", 48, 48, 48, ec.SECP384R1),
    0x0012: _Kem(0x0012, "sha512", 64, 64, 66, ec.SECP521R1),
    0x0020: _Kem(0x0020, "sha256", 32, 32, 32, None, x25519.X25519PrivateKey, x25519.X25519PublicKey),
    0x0021: _Kem(0x0021, "sha512", 64, 64, 56, None, x448.X448PrivateKey, x448.X448PublicKey),
    XWing.kem_id: XWing(),
    MLKEM768: MlKem(MLKEM768),
    MLKEM1024: MlKem(MLKEM1024),
}
DHKEM_IDS = frozenset(kem_id for kem_id, kem in _KEMS.items() if isinstance(kem, _Kem))
"""The classical KEMs (RFC 9180 DHKEM): what APQ-MLS's traditional group must use."""


# -- signature schemes ----------------------------------------------------------

@dataclass(frozen=True)
class _SignatureScheme(_KeyCodec):
    name: str
    curve: type[ec.EllipticCurve] | None
    hash_algorithm: type[hashes.HashAlgorithm] | None
    private_len: int

    def private_key(self, data: bytes) -> _SignaturePrivateKey:
        try:
            if self.name == "ed25519":
                return ed25519.Ed25519PrivateKey.from_private_bytes(data)
            if self.name == "ed448":
                return ed448.Ed448PrivateKey.from_private_bytes(data)
            if not 0 < len(data) <= self.private_len:  # some encoders drop leading zero bytes
                raise ValueError(f"expected {self.private_len} bytes, got {len(data)}")
            return ec.derive_private_key(int.from_bytes(data, "big"), self.curve())  # type: ignore[misc]
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid {self.name} signature private key: {exc}") from None

    def public_key(self, data: bytes) -> _SignaturePublicKey:
        try:
            if self.name == "ed25519":
                return ed25519.Ed25519PublicKey.from_public_bytes(data)
            if self.name == "ed448":
                return ed448.Ed448PublicKey.from_public_bytes(data)
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve(), data)  # type: ignore[misc]
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid {self.name} signature public key: {exc}") from None

    def sign(self, private: _SignaturePrivateKey, data: bytes) -> bytes:
        # a curve is set only for the ECDSA schemes, whose keys are EllipticCurve keys; else EdDSA keys
        if self.curve is None:
            return cast("ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey", private).sign(data)
        ec_private = cast(ec.EllipticCurvePrivateKey, private)
        return ec_private.sign(data, ec.ECDSA(self.hash_algorithm()))  # type: ignore[misc]

    def verify(self, public: _SignaturePublicKey, signature: bytes, data: bytes) -> None:
        try:
            # a curve is set only for the ECDSA schemes, whose keys are EllipticCurve keys; else EdDSA keys
            if self.curve is None:
                cast("ed25519.Ed25519PublicKey | ed448.Ed448PublicKey", public).verify(signature, data)
            else:
                ec_public = cast(ec.EllipticCurvePublicKey, public)
                ec_public.verify(signature, data, ec.ECDSA(self.hash_algorithm()))  # type: ignore[misc]
        except InvalidSignature:
            raise InvalidSignatureError("signature does not verify") from None
        except (ValueError, TypeError) as exc:
            raise InvalidSignatureError(f"malformed signature: {exc}") from None

    def generate(self) -> _SignaturePrivateKey:
        if self.name == "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        if self.name == "ed448":
            return ed448.Ed448PrivateKey.generate()
        return ec.generate_private_key(self.curve())  # type: ignore[misc]


@dataclass(frozen=True)
class _MlDsaScheme(_SignatureScheme):
    """ML-DSA (FIPS 204) for MLS: pure ML-DSA with an empty context, as draft-ietf-mls-pq-ciphersuites takes
    it from draft-ietf-tls-mldsa.  A private key is the 32-byte seed key generation expands; a public key and
    a signature are FIPS 204's raw encodings.  The signing randomness is fresh (hedged), which verifiers cannot
    tell from deterministic signing."""

    key_class: type[mldsa.MLDSA44PrivateKey] | type[mldsa.MLDSA65PrivateKey] | type[mldsa.MLDSA87PrivateKey] = (
        mldsa.MLDSA65PrivateKey)
    public_class: type[mldsa.MLDSA44PublicKey] | type[mldsa.MLDSA65PublicKey] | type[mldsa.MLDSA87PublicKey] = (
        mldsa.MLDSA65PublicKey)

    def private_key(self, data: bytes) -> _SignaturePrivateKey:
        try:
            if len(data) != self.private_len:
                raise ValueError(f"expected a {self.private_len}-byte seed, got {len(data)} bytes")
            return self.key_class.from_seed_bytes(data)
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid {self.name} signature private key: {exc}") from None

    def public_key(self, data: bytes) -> _SignaturePublicKey:
        try:
            return self.public_class.from_public_bytes(data)
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid {self.name} signature public key: {exc}") from None

    def sign(self, private: _SignaturePrivateKey, data: bytes) -> bytes:
        return cast(_MlDsaPrivateKey, private).sign(data)

    def verify(self, public: _SignaturePublicKey, signature: bytes, data: bytes) -> None:
        try:
            cast(_MlDsaPublicKey, public).verify(signature, data)
        except InvalidSignature:
            raise InvalidSignatureError("signature does not verify") from None
        except (ValueError, TypeError) as exc:
            raise InvalidSignatureError(f"malformed signature: {exc}") from None

    def generate(self) -> _SignaturePrivateKey:
        return self.key_class.generate()

    def serialize_public(self, key: _KemPublicKey | _SignaturePublicKey) -> bytes:
        return cast(_MlDsaPublicKey, key).public_bytes_raw()

    def serialize_private(self, key: _KemPrivateKey | _SignaturePrivateKey) -> bytes:
        return cast(_MlDsaPrivateKey, key).private_bytes_raw()  # the seed


_ED25519 = _SignatureScheme("ed25519", None, None, 32)
_ED448 = _SignatureScheme("ed448", None, None, 57)
_P256 = _SignatureScheme("ecdsa_secp256r1_sha256", ec.SECP256R1, hashes.SHA256, 32)
_P384 = _SignatureScheme("ecdsa_secp384r1_sha384", ec.SECP384R1, hashes.SHA384, 48)
_P521 = _SignatureScheme("ecdsa_secp521r1_sha512", ec.SECP521R1, hashes.SHA512, 66)
_MLDSA44 = _MlDsaScheme("mldsa44", None, None, 32, mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey)
_MLDSA65 = _MlDsaScheme("mldsa65", None, None, 32, mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey)
_MLDSA87 = _MlDsaScheme("mldsa87", None, None, 32, mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey)


class SigningKey:
    """A signature private key, parsed once.

    Parsing an Ed25519 private key derives its public key, which costs as much
    as a signature; a group signs several times per epoch with the same key,
    so the parsed key travels with the group from epoch to epoch.  It is held
    by its owner only (never in a process-wide cache) and never repr'd.
    """

    __slots__ = ("_key", "_scheme", "raw")

    def __init__(self, scheme: _SignatureScheme, raw: bytes) -> None:
        self.raw = bytes(raw)
        self._scheme = scheme
        self._key = scheme.private_key(self.raw)

    def __repr__(self) -> str:
        return f"SigningKey({self._scheme.name})"

    def sign(self, data: bytes) -> bytes:
        return self._scheme.sign(self._key, data)

    def public_bytes(self) -> bytes:
        return self._scheme.serialize_public(self._key.public_key())


SignatureKey = bytes | SigningKey
"""A signature private key in its wire form, or already parsed."""


# -- the cipher suite --------------------------------------------------------------

def _kem(kem_id: int, derivation: str | None) -> HpkeKem:
    """The KEM of ``kem_id`` deriving key pairs by ``derivation`` (None: the KEM's only or default rule)."""
    if derivation is None:
        return _KEMS[kem_id]
    if kem_id not in (XWing.kem_id, MLKEM768, MLKEM1024):
        raise UnsupportedError(f"KEM {kem_id:#06x} has one DeriveKeyPair rule: give no derivation")
    try:
        return XWing(derivation) if kem_id == XWing.kem_id else MlKem(kem_id, derivation)
    except CryptoError as exc:
        raise UnsupportedError(str(exc)) from None


class CipherSuite:
    """One MLS cipher suite: hash/KDF, AEAD, HPKE and signature scheme.

    Obtain instances with :func:`get_suite`; they are immutable and cached.
    Keys are bytes in their RFC 9420 wire form.
    """

    def __init__(self, suite_id: int, name: str, kem_id: int, hash_name: str, aead: str,
                 signature: _SignatureScheme, derivation: str | None = None) -> None:
        self.id = suite_id
        self.name = name
        self._kem = _kem(kem_id, derivation)
        self.derivation = derivation
        """The KEM's DeriveKeyPair rule where it has several (X-Wing: "labelled" or "plain"); None: its only one."""
        self.kem_id = kem_id
        self.hash_name = hash_name
        self.hash_len = hashlib.new(hash_name).digest_size
        self.aead_name = aead
        self.hash_name = hash_name
        self.aead_key_len = 16 if aead == "aes128gcm" else 32
        self.aead_nonce_len = 12
        self.aead_id = {"aes128gcm": 1, "aes256gcm": 2, "chacha20poly1305": 3}[aead]
        self.kdf_id = {"sha256": 1, "sha384": 2, "sha512": 3}[hash_name]
        self._signature = signature
        self.hpke_pub_len = self._kem.public_len
        self._hpke_suite_id = (b"HPKE" + kem_id.to_bytes(2, "big") + self.kdf_id.to_bytes(2, "big")
                               + self.aead_id.to_bytes(2, "big"))
        # base mode has no PSK, so psk_id_hash is a constant of the suite (RFC 9180 section 5.1)
        self._hpke_psk_id_hash = self._hpke_labeled_extract(b"", b"psk_id_hash", b"")

    def __repr__(self) -> str:
        return f"CipherSuite({self.id}, {self.name})"

    @property
    def signature_scheme(self) -> str:
        """The signature scheme's name (suites with the same one can share a signature key)."""
        return self._signature.name

    # hash and KDF
    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.hash_name, data).digest()

    def mac(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.hash_name)

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        return _extract(self.hash_name, salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        return _expand(self.hash_name, self.hash_len, prk, info, length)

    def expand_with_label(self, secret: bytes, label: bytes | str, context: bytes, length: int) -> bytes:
        info = length.to_bytes(2, "big") + _opaque_label(label) + encode_varint(len(context)) + context
        return _expand(self.hash_name, self.hash_len, secret, info, length)

    def derive_secret(self, secret: bytes, label: bytes | str) -> bytes:
        # ExpandWithLabel(secret, label, "", Nh): a single HMAC block over a constant info
        return hmac.digest(secret, _derive_secret_block(self.hash_len, label), self.hash_name)

    def derive_tree_secret(self, secret: bytes, label: bytes | str, generation: int, length: int) -> bytes:
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), length)

    def ref_hash(self, label: bytes | str, value: bytes) -> bytes:
        raw_label = label.encode() if isinstance(label, str) else label
        return self.hash(Writer().opaque(raw_label).opaque(value).getvalue())

    # AEAD
    def _aead(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        # Built for each use and dropped: no process-wide object may hold key material (a cache
        # keyed by raw keys kept old epochs' keys alive after they were deleted).
        if len(key) != self.aead_key_len:
            raise CryptoError(f"AEAD key must be {self.aead_key_len} bytes, got {len(key)}")
        return ChaCha20Poly1305(key) if self.aead_name == "chacha20poly1305" else AESGCM(key)

    def aead_encrypt(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        if len(nonce) != self.aead_nonce_len:
            raise CryptoError(f"AEAD nonce must be {self.aead_nonce_len} bytes")
        return self._aead(key).encrypt(nonce, plaintext, aad)

    def aead_decrypt(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        if len(nonce) != self.aead_nonce_len:
            raise CryptoError(f"AEAD nonce must be {self.aead_nonce_len} bytes")
        try:
            return self._aead(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise CryptoError("AEAD decryption failed") from None

    # signatures
    def _sign_content(self, label: bytes | str, content: bytes) -> bytes:
        return _opaque_label(label) + encode_varint(len(content)) + content

    def signing_key(self, signature_priv: SignatureKey) -> SigningKey:
        """``signature_priv`` parsed for this suite's signature scheme (kept as is if it already is)."""
        if isinstance(signature_priv, SigningKey):
            if signature_priv._scheme is not self._signature:
                raise CryptoError(f"a {signature_priv._scheme.name} key cannot sign for {self.name}")
            return signature_priv
        return SigningKey(self._signature, signature_priv)

    def sign_with_label(self, signature_priv: SignatureKey, label: bytes | str, content: bytes) -> bytes:
        return self.signing_key(signature_priv).sign(self._sign_content(label, content))

    def verify_with_label(self, signature_pub: bytes, label: bytes | str, content: bytes,
                          signature: bytes) -> None:
        public = _cached_signature_public(self._signature, signature_pub)
        self._signature.verify(public, signature, self._sign_content(label, content))

    def generate_signature_key_pair(self) -> tuple[bytes, bytes]:
        private = self._signature.generate()
        return self._signature.serialize_private(private), self._signature.serialize_public(private.public_key())

    def signature_public_key(self, signature_priv: SignatureKey) -> bytes:
        return self.signing_key(signature_priv).public_bytes()

    # HPKE
    def _hpke_labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return _extract(self.hash_name, salt, HPKE_VERSION + self._hpke_suite_id + label + ikm)

    def _hpke_labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        data = length.to_bytes(2, "big") + HPKE_VERSION + self._hpke_suite_id + label + info
        return self.kdf_expand(prk, data, length)

    def _hpke_schedule(self, shared_secret: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
        info_hash = self._hpke_labeled_extract(b"", b"info_hash", info)
        context = b"\x00" + self._hpke_psk_id_hash + info_hash
        secret = self._hpke_labeled_extract(shared_secret, b"secret", b"")
        key = self._hpke_labeled_expand(secret, b"key", context, self.aead_key_len)
        nonce = self._hpke_labeled_expand(secret, b"base_nonce", context, self.aead_nonce_len)
        exporter = self._hpke_labeled_expand(secret, b"exp", context, self.hash_len)
        return key, nonce, exporter

    def hpke_seal(self, public_key: bytes, info: bytes, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        """Single-shot HPKE base-mode encryption: (enc, ciphertext)."""
        shared_secret, enc = self._kem.encap(public_key)
        key, nonce, _ = self._hpke_schedule(shared_secret, info)
        return enc, self.aead_encrypt(key, nonce, aad, plaintext)

    def hpke_open(self, private_key: bytes, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        shared_secret = self._kem.decap(enc, private_key)
        key, nonce, _ = self._hpke_schedule(shared_secret, info)
        try:
            return self.aead_decrypt(key, nonce, aad, ciphertext)
        except CryptoError:
            raise CryptoError("HPKE decryption failed") from None

    def hpke_export_sender(self, public_key: bytes, info: bytes, exporter_context: bytes,
                           length: int) -> tuple[bytes, bytes]:
        """SetupBaseS + Export: (enc, exported secret); used by external commits."""
        shared_secret, enc = self._kem.encap(public_key)
        _, _, exporter = self._hpke_schedule(shared_secret, info)
        return enc, self._hpke_labeled_expand(exporter, b"sec", exporter_context, length)

    def hpke_export_receiver(self, private_key: bytes, enc: bytes, info: bytes, exporter_context: bytes,
                             length: int) -> bytes:
        shared_secret = self._kem.decap(enc, private_key)
        _, _, exporter = self._hpke_schedule(shared_secret, info)
        return self._hpke_labeled_expand(exporter, b"sec", exporter_context, length)

    def _encrypt_context(self, label: bytes | str, context: bytes) -> bytes:
        return _opaque_label(label) + encode_varint(len(context)) + context

    def encrypt_with_label(self, public_key: bytes, label: bytes | str, context: bytes,
                           plaintext: bytes) -> tuple[bytes, bytes]:
        """EncryptWithLabel (RFC 9420 section 5.1.3): (kem_output, ciphertext)."""
        return self.hpke_seal(public_key, self._encrypt_context(label, context), b"", plaintext)

    def decrypt_with_label(self, private_key: bytes, label: bytes | str, context: bytes, kem_output: bytes,
                           ciphertext: bytes) -> bytes:
        return self.hpke_open(private_key, kem_output, self._encrypt_context(label, context), b"", ciphertext)

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """HPKE DeriveKeyPair: (private, public)."""
        return self._kem.derive_key_pair(ikm)

    def generate_hpke_key_pair(self) -> tuple[bytes, bytes]:
        return self.derive_key_pair(os.urandom(self._kem.private_len))

    def hpke_public_key(self, private_key: bytes) -> bytes:
        return self._kem.public_key_of(private_key)


_PUBLIC_CACHE: dict[tuple[str, bytes], _SignaturePublicKey] = {}


def _cached_signature_public(scheme: _SignatureScheme, data: bytes) -> _SignaturePublicKey:
    key = (scheme.name, bytes(data))
    public = _PUBLIC_CACHE.get(key)
    if public is None:
        public = scheme.public_key(data)
        if len(_PUBLIC_CACHE) > 256:
            _PUBLIC_CACHE.clear()
        _PUBLIC_CACHE[key] = public
    return public


_SUITES = {
    1: CipherSuite(1, "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519", 0x20, "sha256", "aes128gcm", _ED25519),
    2: CipherSuite(2, "MLS_128_DHKEMP256_AES128GCM_SHA256_P256", 0x10, "sha256", "aes128gcm", _P256),
    3: CipherSuite(3, "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519", 0x20, "sha256",
                   "chacha20poly1305", _ED25519),
    4: CipherSuite(4, "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448", 0x21, "sha512", "aes256gcm", _ED448),
    5: CipherSuite(5, "MLS_256_DHKEMP521_AES256GCM_SHA512_P521", 0x12, "sha512", "aes256gcm", _P521),
    6: CipherSuite(6, "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448", 0x21, "sha512",
                   "chacha20poly1305", _ED448),
    7: CipherSuite(7, "MLS_256_DHKEMP384_AES256GCM_SHA384_P384", 0x11, "sha384", "aes256gcm", _P384),
}

RFC9420_SUITES: tuple[int, ...] = tuple(sorted(_SUITES))
"""The seven suites RFC 9420 registers (and its official test vectors cover)."""

SIGNATURE_SCHEMES = {scheme.name: scheme for scheme in (_ED25519, _ED448, _P256, _P384, _P521, _MLDSA44, _MLDSA65,
                                                         _MLDSA87)}
AEADS = ("aes128gcm", "aes256gcm", "chacha20poly1305")
HASHES = ("sha256", "sha384", "sha512")

XWING_SUITE = 0x004D
"""OpenMLS's provisional code point for MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519 (no MLS code point
for a post-quantum suite is registered yet), with the plain DeriveKeyPair rule of OpenMLS's release (0.9.0,
hpke-rs 0.7.0); docs/pq.md has the evidence and what changes when OpenMLS releases the labelled rule."""
TSMLS_PQ_SUITES = tuple(range(0x0051, 0x0059))
"""ts-mls's post-quantum suites 81-88 (ML-KEM-1024 or X-Wing; Ed25519 or ML-DSA-87; SHA-512), registered below."""


def register_suite(suite_id: int, name: str, *, kem_id: int, hash_name: str, aead: str, signature: str,
                   derivation: str | None = None) -> CipherSuite:
    """Make ``suite_id`` a cipher suite of this process (a provisional code point another stack uses).

    For example the SHA-512 X-Wing suite some stacks ship::

        register_suite(0xF0A1, "MLS_256_XWING_AES256GCM_SHA512_Ed25519", kem_id=0x647A,
                       hash_name="sha512", aead="aes256gcm", signature="ed25519")

    Both peers must register the same suite under the same code point.
    ``derivation`` picks the KEM's DeriveKeyPair rule where there are several
    (X-Wing: ``"labelled"``, draft-ietf-hpke-pq, the default; or ``"plain"``,
    the X-Wing draft's SHAKE256(ikm, 32)): it is part of the suite, since it
    decides every node key of an UpdatePath.  The seven RFC 9420 suites
    cannot be redefined.  Register before building any configuration that
    names the suite (command-line ``--suite`` choices are read when the parser
    is built).
    """
    if suite_id in RFC9420_SUITES or not 0 < suite_id < 0x10000:
        raise UnsupportedError(f"cipher suite {suite_id} is registered by RFC 9420 or out of range")
    if kem_id not in _KEMS or hash_name not in HASHES or aead not in AEADS or signature not in SIGNATURE_SCHEMES:
        raise UnsupportedError(f"cannot build suite {name}: KEM {kem_id:#06x}, hash {hash_name}, AEAD {aead} "
                               f"and signature {signature} must be among {sorted(_KEMS)}, {HASHES}, {AEADS}, "
                               f"{sorted(SIGNATURE_SCHEMES)}")
    existing = _SUITES.get(suite_id)
    suite = CipherSuite(suite_id, name, kem_id, hash_name, aead, SIGNATURE_SCHEMES[signature], derivation)
    if existing is not None and (existing.name, existing.derivation) != (name, derivation):
        raise UnsupportedError(f"cipher suite {suite_id:#06x} is already {existing.name}"
                               + (f" (DeriveKeyPair {existing.derivation})" if existing.derivation else ""))
    _SUITES[suite_id] = existing or suite
    global SUPPORTED_SUITES
    SUPPORTED_SUITES = tuple(sorted(_SUITES))
    return _SUITES[suite_id]


SUPPORTED_SUITES: tuple[int, ...] = RFC9420_SUITES
register_suite(XWING_SUITE, "MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519", kem_id=XWing.kem_id,
               hash_name="sha256", aead="chacha20poly1305", signature="ed25519", derivation="plain")
for _code, _name, _kem_id, _aead, _signature in (
        # ts-mls 1.6.4's post-quantum suites that work with a SHA-512 key schedule (its ML-KEM suites on
        # SHA-256/384 hand a 32- or 48-byte secret to a DeriveKeyPair that needs 64 bytes, and ML-KEM-512 is
        # not in `cryptography`); its X-Wing derives by the plain rule, its ML-KEM by the raw one (docs/pq.md)
        (0x0051, "MLS_256_MLKEM1024_AES256GCM_SHA512_Ed25519", MLKEM1024, "aes256gcm", "ed25519"),
        (0x0052, "MLS_256_MLKEM1024_CHACHA20POLY1305_SHA512_Ed25519", MLKEM1024, "chacha20poly1305", "ed25519"),
        (0x0053, "MLS_256_XWING_AES256GCM_SHA512_Ed25519", XWing.kem_id, "aes256gcm", "ed25519"),
        (0x0054, "MLS_256_XWING_CHACHA20POLY1305_SHA512_Ed25519", XWing.kem_id, "chacha20poly1305", "ed25519"),
        (0x0055, "MLS_256_MLKEM1024_AES256GCM_SHA512_MLDSA87", MLKEM1024, "aes256gcm", "mldsa87"),
        (0x0056, "MLS_256_MLKEM1024_CHACHA20POLY1305_SHA512_MLDSA87", MLKEM1024, "chacha20poly1305", "mldsa87"),
        (0x0057, "MLS_256_XWING_AES256GCM_SHA512_MLDSA87", XWing.kem_id, "aes256gcm", "mldsa87"),
        (0x0058, "MLS_256_XWING_CHACHA20POLY1305_SHA512_MLDSA87", XWing.kem_id, "chacha20poly1305", "mldsa87")):
    register_suite(_code, _name, kem_id=_kem_id, hash_name="sha512", aead=_aead, signature=_signature,
                   derivation="plain" if _kem_id == XWing.kem_id else "raw")


def get_suite(suite_id: int) -> CipherSuite:
    try:
        return _SUITES[suite_id]
    except KeyError:
        raise UnsupportedError(f"unsupported cipher suite {suite_id}") from None
