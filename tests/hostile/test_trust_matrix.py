"""One trust decision at every entry point: trust options x peers x entry points, one outcome per cell.

Each cell builds the server's trust from the real command-line options
(``mlstls.cli._trust``: --allow, --trust-file, --trust-on-first-use and their
combinations) or from X.509 roots, lets a peer reach one entry point
(handshake, resumption, the repeated answer to a resumption, a commit with a
new leaf, a trust reload while connected) and asserts that the outcome is the
one the trust configuration gives when asked directly, in mlstls and in
mlsquic.  A refusal delivers nothing and leaves the server's stored session
byte-identical.  For the resumption-side entry points the session was first
established under a configuration that accepted the peer; the configuration
under test is put in force just before the entry point (``TrustPolicy.replace``).
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest

from mls2p import MemorySessionStore, ProfileConfig
from mls2p.errors import AlertDescription
from mls2p.testing import ThrowawayCA
from mls2p.trust import TrustPolicy
from mlscore.credentials import Credential, X509AuthenticationService, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import CredentialError
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls.cli import TOFU_FILE, _trust
from mlstls.connection import ConnectionTerminated, DataReceived, HandshakeCompleted
from mlstls.testing import TlsPair

NOW = datetime.datetime.now(datetime.UTC)
REFUSALS = {AlertDescription.BAD_CERTIFICATE, AlertDescription.CERTIFICATE_REVOKED}


def _keypair() -> tuple[bytes, bytes]:
    return get_suite(1).generate_signature_key_pair()


@dataclass(frozen=True)
class Keys:
    server: tuple[bytes, bytes]
    pinned: tuple[bytes, bytes]
    other: tuple[bytes, bytes]
    changed: tuple[bytes, bytes]
    trusted_ca: ThrowawayCA
    retired_ca: ThrowawayCA
    rogue_ca: ThrowawayCA


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(_keypair(), _keypair(), _keypair(), _keypair(), ThrowawayCA.root("trusted", NOW),
                ThrowawayCA.root("retired", NOW), ThrowawayCA.root("rogue", NOW))


OPTIONS = ["allow", "trust-file", "tofu", "allow+tofu", "file+tofu", "x509"]
PEERS = ["pinned", "impostor", "unknown", "revoked", "changed"]


def _peer(option: str, peer: str, keys: Keys) -> tuple[Credential, bytes, bytes]:
    """(credential, private key, public key) the peer presents."""
    if option == "x509" and peer != "unknown":
        ca, (priv, pub) = {"pinned": (keys.trusted_ca, keys.pinned), "impostor": (keys.rogue_ca, keys.other),
                           "revoked": (keys.retired_ca, keys.pinned), "changed": (keys.trusted_ca, keys.changed)}[peer]
        return ca.issue("client", 1, pub, NOW), priv, pub
    name, (priv, pub) = {"pinned": (b"client", keys.pinned), "impostor": (b"client", keys.other),
                         "unknown": (b"stranger", keys.other), "revoked": (b"revoked", keys.other),
                         "changed": (b"client", keys.changed)}[peer]
    return Credential.basic(name), priv, pub


def _option(option: str, keys: Keys, folder: Path) -> TrustPolicy:
    """The trust configuration under test, built by the command line's own code where one exists."""
    if option == "x509":
        return TrustPolicy(x509=X509AuthenticationService([keys.trusted_ca.der]))
    pin = f"client={key_fingerprint(keys.pinned[1])}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "peers").write_text(f"client {key_fingerprint(keys.pinned[1])}\n")
    (folder / TOFU_FILE).write_text(f"client {key_fingerprint(keys.pinned[1])}\n")  # first used before
    args = argparse.Namespace(allow=[pin] if option.startswith("allow") else None,
                              trust_file=str(folder / "peers") if option.startswith(("trust-file", "file")) else None,
                              trust_on_first_use="tofu" in option, state_dir=str(folder),
                              insecure_accept_any_peer=False)
    policy, insecure = _trust(args)
    assert policy is not None and not insecure
    return policy


class _AcceptAll:
    def validate(self, credential: Credential, signature_key: bytes, suite_id: int, now: int | None = None) -> None:
        return None


def _accepting(credential: Credential, pub: bytes) -> TrustPolicy:
    """A configuration that accepts the peer: the one its session was established under."""
    return TrustPolicy(pins={credential.identity: {key_fingerprint(pub)}}, x509=_AcceptAll())


def _expected(policy: TrustPolicy, credential: Credential, pub: bytes) -> str:
    try:
        policy.validate(credential, pub, 1, int(NOW.timestamp()))
    except CredentialError:
        return "refused"
    return "accepted"


def _profiles(keys: Keys, credential: Credential, priv: bytes, server_trust: TrustPolicy
              ) -> tuple[ProfileConfig, ProfileConfig]:
    client = ProfileConfig(credential=credential, signature_priv=priv, authentication_service=TrustPolicy(
        pins={b"server": {key_fingerprint(keys.server[1])}}))
    server = ProfileConfig(credential=Credential.basic(b"server"), signature_priv=keys.server[0],
                           authentication_service=server_trust)
    return client, server


# -- mlstls (in place of TLS), every entry point ------------------------------------------------------

ENTRIES = ["handshake", "resumption", "repeated-answer", "commit", "reload"]


def _tls_outcome(pair: TlsPair, *, since: int, stored: bytes | None, group_id: bytes | None) -> str:
    server_events = pair.events["server"][since:]
    closed = [e for e in server_events if isinstance(e, ConnectionTerminated)]
    if closed:
        assert closed[0].alert in REFUSALS, closed
        assert not any(isinstance(e, DataReceived) for e in server_events)
        if group_id is not None:
            assert pair.server_store.load(group_id) == stored  # a refusal changes nothing stored
        return "refused"
    pair.client.send_data(b"ping")
    pair.pump()
    assert any(isinstance(e, DataReceived) and e.data == b"ping" for e in pair.events["server"][since:])
    return "accepted"


def _tls_cell(option: str, peer: str, entry: str, keys: Keys, folder: Path) -> tuple[str, str]:
    credential, priv, pub = _peer(option, peer, keys)
    policy = _option(option, keys, folder)
    expected = _expected(policy, credential, pub)
    if entry == "handshake":
        client, server = _profiles(keys, credential, priv, policy)
        pair = TlsPair(client_profile=client, server_profile=server)
        pair.client.connect()
        pair.pump()
        if not any(isinstance(e, HandshakeCompleted) for e in pair.events["server"]):
            assert pair.server_store.group_ids() == []
        return _tls_outcome(pair, since=0, stored=None, group_id=None), expected
    live = _accepting(credential, pub)
    client, server = _profiles(keys, credential, priv, live)
    pair = TlsPair(client_profile=client, server_profile=server)
    pair.client.connect()
    pair.pump()
    assert any(isinstance(e, HandshakeCompleted) for e in pair.events["server"]), pair.events
    group_id = pair.client.session.group_id if pair.client.session else None
    assert group_id is not None
    if entry == "commit":
        live.replace(policy, notify=False)  # the connection has not re-checked: the commit must
        since, stored = len(pair.events["server"]), pair.server_store.load(group_id)
        pair.client.rekey()
        pair.pump()
        return _tls_outcome(pair, since=since, stored=stored, group_id=group_id), expected
    if entry == "reload":
        since, stored = len(pair.events["server"]), pair.server_store.load(group_id)
        live.replace(policy)
        pair.pump()
        return _tls_outcome(pair, since=since, stored=stored, group_id=group_id), expected
    pair.reconnect()
    if entry == "repeated-answer":  # the server answers, the answer is lost, the client asks again
        pair.client.connect()
        pair.server.receive_data(pair.client.data_to_send())
        pair.server.data_to_send()
        pair.reconnect()
    live.replace(policy)
    stored = pair.server_store.load(group_id)
    pair.client.connect()
    pair.pump()
    return _tls_outcome(pair, since=0, stored=stored, group_id=group_id), expected


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("option", OPTIONS)
def test_mlstls_outcome_is_the_trust_configurations_answer(option: str, peer: str, entry: str, keys: Keys,
                                                           tmp_path: Path) -> None:
    outcome, expected = _tls_cell(option, peer, entry, keys, tmp_path)
    assert outcome == expected


def test_the_matrix_has_both_outcomes(keys: Keys, tmp_path: Path) -> None:
    """The matrix cannot pass by accepting or refusing everything: its expectations hold both answers (the
    expectation does not depend on the entry point, so every entry point's column sees both)."""
    answers = set()
    for option in OPTIONS:
        for peer in PEERS:
            credential, _, pub = _peer(option, peer, keys)
            answers.add(_expected(_option(option, keys, tmp_path / option), credential, pub))
    assert answers == {"accepted", "refused"}
    # the finding of the review: a pinned name with a fresh key, where first use is also allowed
    credential, _, pub = _peer("allow+tofu", "impostor", keys)
    assert _expected(_option("allow+tofu", keys, tmp_path / "finding-1"), credential, pub) == "refused"


# -- mlsquic (QUIC-MLS): the same cells for handshake, resumption and reload ---------------------------

def _quic_settle(pair: QuicPair) -> None:
    pair.run(lambda: pair.established() or pair.client.terminated is not None
             or (pair.server is not None and pair.server.terminated is not None), max_seconds=20)
    pair.advance(0.2)


def _quic_outcome(pair: QuicPair) -> str:
    assert pair.server is not None
    terminated = pair.server.terminated or pair.client.terminated
    if terminated is not None:
        assert terminated.error_code - 0x100 in REFUSALS, terminated
        assert not pair.server.streams
        return "refused"
    assert pair.echo_of(pair.send(b"ping"), max_seconds=20) == b"ping"
    return "accepted"


def _quic_cell(option: str, peer: str, entry: str, keys: Keys, folder: Path) -> tuple[str, str]:
    credential, priv, pub = _peer(option, peer, keys)
    policy = _option(option, keys, folder)
    expected = _expected(policy, credential, pub)
    server_store, client_store = MemorySessionStore(), MemorySessionStore()
    live = policy if entry == "handshake" else _accepting(credential, pub)
    client, server = _profiles(keys, credential, priv, live)
    server_config = server_configuration(profile=server, store=server_store)
    pair = QuicPair(client_configuration(profile=client, store=client_store), server_config)
    _quic_settle(pair)
    if entry == "handshake":
        if not pair.established():
            assert server_store.group_ids() == []
        return _quic_outcome(pair), expected
    assert pair.established()
    group_id = pair.client.connection.mls_session.group_id
    stored = server_store.load(group_id)
    live.replace(policy)
    if entry == "reload":
        pair.advance(0.2)
        outcome = _quic_outcome(pair)
        assert outcome == "accepted" or server_store.load(group_id) == stored
        return outcome, expected
    pair = QuicPair(client_configuration(profile=client, store=client_store, resume_group_id=group_id),
                    server_config)
    _quic_settle(pair)
    outcome = _quic_outcome(pair)
    assert outcome == "accepted" or server_store.load(group_id) == stored
    return outcome, expected


@pytest.mark.parametrize("entry", ["handshake", "resumption", "reload"])
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("option", OPTIONS)
def test_mlsquic_outcome_is_the_same(option: str, peer: str, entry: str, keys: Keys, tmp_path: Path) -> None:
    outcome, expected = _quic_cell(option, peer, entry, keys, tmp_path)
    assert outcome == expected
    assert outcome == _tls_cell(option, peer, entry, keys, tmp_path / "tls")[0]  # one outcome per cell
