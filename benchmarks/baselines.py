"""Baselines measured in the same run as our figures: a real OpenSSL TLS 1.3 handshake and the crypto floor.

The TLS handshake is stdlib ``ssl`` (OpenSSL) over memory BIOs, both sides in
this process: TLS 1.3 only, X25519, an Ed25519 self-signed certificate, no
session tickets (``num_tickets = 0``) - the full cost of a handshake that gives
fresh keys, as an MLS rekey does.  The crypto floor is what one profile rekey
cannot avoid (:data:`FLOOR_PER_REKEY`): three Ed25519 signatures and their
verifications, four X25519 key pairs and two Diffie-Hellman operations.
"""

from __future__ import annotations

import datetime
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.x509.oid import NameOID


def median_cpu_ms(fn: Callable[[], object], rounds: int, warmup: int = 5) -> float:
    """Median CPU time (process time) of ``fn`` over ``rounds`` calls, in milliseconds."""
    return interleaved_medians_ms({"fn": fn}, rounds, warmup)["fn"]


def interleaved_medians_ms(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 5,
                           block: int = 10) -> dict[str, float]:
    """Median CPU time of each function, in milliseconds, the functions taking turns in blocks.

    On a shared machine the speed drifts over seconds; taking turns exposes
    every function to the same drift, so the ratios between them hold even
    when the absolute figures move.  Each turn is ``block`` calls in a row
    (after ``warmup`` untimed ones), so caches are as warm as in a loop of
    the function alone.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(values) < rounds for values in samples.values()):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(min(block, rounds - len(samples[name]))):
                start = time.process_time()
                fn()
                samples[name].append(time.process_time() - start)
    return {name: 1000 * statistics.median(values) for name, values in samples.items()}


def _ed25519_certificate(folder: Path) -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                   .sign(key, None))
    cert, key_file = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert), str(key_file)


class OpenSslHandshake:
    """One full TLS 1.3 handshake per call, both sides in memory."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="bench-tls-")
        cert, key = _ed25519_certificate(Path(self._folder.name))
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_3
        self.server.load_cert_chain(cert, key)
        self.server.num_tickets = 0
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client.minimum_version = ssl.TLSVersion.TLSv1_3
        self.client.load_verify_locations(cert)
        self.bytes_on_wire = 0
        self.version = ssl.OPENSSL_VERSION

    def __call__(self) -> None:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = self.client.wrap_bio(c_in, c_out, server_hostname="localhost")
        server = self.server.wrap_bio(s_in, s_out, server_side=True)
        done = {client: False, server: False}
        wire = 0
        while not all(done.values()):
            for side in (client, server):
                if not done[side]:
                    try:
                        side.do_handshake()
                        done[side] = True
                    except ssl.SSLWantReadError:
                        pass
            for source, sink in ((c_out, s_in), (s_out, c_in)):
                data = source.read()
                wire += len(data)
                sink.write(data)
        self.bytes_on_wire = wire

    def close(self) -> None:
        self._folder.cleanup()


FLOOR_PER_REKEY = {"ed25519_sign": 3, "ed25519_verify": 3, "x25519_keygen": 4, "x25519_dh": 2}
"""What one rekey (both sides) cannot avoid: three signatures and their checks (commit, leaf node,
EpochKeyUpdate); four X25519 key pairs (the committer's leaf and root keys, the HPKE ephemeral, the
receiver deriving the root key to check it) and two Diffie-Hellman (HPKE encap and decap)."""


def floor_primitives() -> dict[str, Callable[[], object]]:
    """One call of each primitive of the floor, by name."""
    signing = ed25519.Ed25519PrivateKey.generate()
    public = signing.public_key()
    message = b"x" * 200
    signature = signing.sign(message)
    own, peer = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate().public_key()
    return {"ed25519_sign": lambda: signing.sign(message),
            "ed25519_verify": lambda: public.verify(signature, message),
            "x25519_keygen": lambda: x25519.X25519PrivateKey.generate().public_key(),
            "x25519_dh": lambda: own.exchange(peer)}


def rekey_floor_ms(primitive_ms: dict[str, float]) -> float:
    return sum(count * primitive_ms[name] for name, count in FLOOR_PER_REKEY.items())
