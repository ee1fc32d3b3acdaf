"""Suite negotiation: the client offers several suites, the server chooses by its preference, and an
active attacker cannot make two X-Wing-capable peers settle on a classical suite (mls2p.negotiation)."""

from __future__ import annotations

import dataclasses

import pytest

from mls2p import ProfileConfig, TwoPartySession
from mls2p.errors import AlertDescription, ConfigurationError
from mls2p.negotiation import MAX_OFFERED_SUITES, DowngradeError, client_hello, offered_key_packages
from mls2p.testing import config, sent
from mls2p.wire import ProfileMessage, ProfileMessageType
from mlscore.crypto import XWING_SUITE, get_suite
from mlscore.errors import DecodeError, InvalidSignatureError, UnsupportedError, ValidationError
from mlscore.leaf_node import LeafNode
from mlscore.messages import KeyPackage
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls.connection import ConnectionTerminated
from mlstls.record import HEADER_SIZE, ContentType, plaintext_records
from mlstls.testing import TlsPair

PQ_FIRST = (XWING_SUITE, 1)


def profile(name: bytes, suites: tuple[int, ...]) -> ProfileConfig:
    return dataclasses.replace(config(name, suites[0]), accepted_suites=suites)


def hello_of(client: ProfileConfig) -> tuple[TwoPartySession, bytes]:
    session, actions = TwoPartySession.initiator(client)
    return session, ProfileMessage.from_bytes(sent(actions)[0]).body


def answer(server: ProfileConfig, body: bytes) -> TwoPartySession:
    responder = TwoPartySession.responder(server)
    responder.receive(ProfileMessage(ProfileMessageType.CLIENT_HELLO, body))
    return responder


@pytest.mark.parametrize(("offered", "accepted", "chosen"), [
    (PQ_FIRST, PQ_FIRST, XWING_SUITE),
    ((1, XWING_SUITE), PQ_FIRST, XWING_SUITE),  # the server's preference decides
    (PQ_FIRST, (1, XWING_SUITE), 1),
    ((1,), PQ_FIRST, 1),  # a classical-only client is not a downgrade: it never offered X-Wing
    ((1, 3), (3,), 3),
])
def test_the_server_picks_its_most_preferred_offered_suite(offered, accepted, chosen) -> None:
    _, body = hello_of(profile(b"client", offered))
    assert [kp.cipher_suite for kp in offered_key_packages(body)] == list(offered)
    server = answer(profile(b"server", accepted), body)
    assert server.group is not None and server.group.suite.id == chosen


def test_a_single_suite_client_hello_is_the_drafts_byte_for_byte() -> None:
    _, body = hello_of(config(b"client"))
    (key_package,) = offered_key_packages(body)
    assert body == client_hello([key_package])
    assert key_package.leaf_node.capabilities.cipher_suites == (1,)


def strip_suite(body: bytes, suite_id: int) -> bytes:
    """What an active attacker does: drop the KeyPackage of one suite from the ClientHello."""
    return client_hello([kp for kp in offered_key_packages(body) if kp.cipher_suite != suite_id])


def test_stripping_the_x_wing_key_package_is_detected_and_changes_nothing() -> None:
    _, body = hello_of(profile(b"client", PQ_FIRST))
    responder = TwoPartySession.responder(profile(b"server", PQ_FIRST))
    with pytest.raises(DowngradeError, match=r"offer suite 77.*no KeyPackage for it"):
        responder.receive(ProfileMessage(ProfileMessageType.CLIENT_HELLO, strip_suite(body, XWING_SUITE)))
    assert responder.group is None and responder.to_state() is None
    assert answer(profile(b"server", (1,)), strip_suite(body, XWING_SUITE)).group is not None  # 1 is all it takes


def test_rewriting_the_signed_offer_breaks_the_client_signature() -> None:
    _, body = hello_of(profile(b"client", PQ_FIRST))
    classical = next(kp for kp in offered_key_packages(body) if kp.cipher_suite == 1)
    leaf = classical.leaf_node
    forged_leaf = dataclasses.replace(leaf, capabilities=dataclasses.replace(leaf.capabilities, cipher_suites=(1,)))
    forged = dataclasses.replace(classical, leaf_node=LeafNode.from_bytes(forged_leaf.to_bytes()))
    with pytest.raises(InvalidSignatureError):
        answer(profile(b"server", PQ_FIRST), client_hello([KeyPackage.from_bytes(forged.to_bytes())]))


def test_hostile_client_hellos_are_refused() -> None:
    _, body = hello_of(profile(b"client", PQ_FIRST))
    x_wing, classical = offered_key_packages(body)
    with pytest.raises(ValidationError, match="twice"):
        offered_key_packages(client_hello([classical, classical]))
    with pytest.raises(DecodeError, match=f"at most {MAX_OFFERED_SUITES}"):
        offered_key_packages(client_hello([classical] * (MAX_OFFERED_SUITES + 1)))
    with pytest.raises(DecodeError):
        offered_key_packages(body[:-1])
    with pytest.raises(DecodeError):
        offered_key_packages(b"")
    with pytest.raises(UnsupportedError, match="no common cipher suite"):
        answer(config(b"server", 3), client_hello([x_wing, classical]))


def test_suites_offered_together_share_one_signature_key() -> None:
    with pytest.raises(ConfigurationError, match="signs with another scheme"):
        dataclasses.replace(config(b"client"), accepted_suites=(1, 2))
    with pytest.raises(ConfigurationError, match="twice"):
        dataclasses.replace(config(b"client"), accepted_suites=(1, 1))


# -- on the transports ----------------------------------------------------------------------------------

def test_mlstls_negotiates_x_wing_and_refuses_a_downgrade_in_flight() -> None:
    pair = TlsPair(client_profile=profile(b"client", PQ_FIRST), server_profile=profile(b"server", PQ_FIRST))
    pair.client.connect()
    pair.pump()
    assert pair.client.session.group.suite.id == pair.server.session.group.suite.id == XWING_SUITE

    attacked = TlsPair(client_profile=profile(b"client", PQ_FIRST), server_profile=profile(b"server", PQ_FIRST))
    attacked.client.connect()
    flight = attacked.client.data_to_send()  # plaintext records: the ClientHello
    message = ProfileMessage.from_bytes(_record_payloads(flight))
    stripped = ProfileMessage(message.msg_type, strip_suite(message.body, XWING_SUITE))
    attacked.server.receive_data(plaintext_records(ContentType.HANDSHAKE, stripped.to_bytes()))
    ended = [e for e in iter(attacked.server.next_event, None) if isinstance(e, ConnectionTerminated)]
    assert ended and ended[0].alert == AlertDescription.ILLEGAL_PARAMETER and "downgrade" in ended[0].reason
    assert attacked.server_store.group_ids() == []
    attacked.client.receive_data(attacked.server.data_to_send())
    assert attacked.client.closed and not attacked.client.established  # refused, never on suite 1


def _record_payloads(flight: bytes) -> bytes:
    payload, offset = b"", 0
    while offset < len(flight):
        length = int.from_bytes(flight[offset + 3 : offset + 5], "big")
        payload += flight[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
        offset += HEADER_SIZE + length
    return payload


def test_mlsquic_negotiates_by_server_preference() -> None:
    for accepted, chosen in ((PQ_FIRST, XWING_SUITE), ((1, XWING_SUITE), 1)):
        pair = QuicPair(client_configuration(profile=profile(b"client", PQ_FIRST)),
                        server_configuration(profile=profile(b"server", accepted)))
        pair.run(pair.established)
        assert pair.client.connection.mls_session.group.suite.id == chosen
        assert pair.echo_of(pair.send(b"negotiated")) == b"negotiated"
        assert get_suite(chosen).id == chosen
