"""Validity in time is enforced with the current time: KeyPackage lifetimes, certificates, and the clock injected.

Found by review: the transports passed no time, and the X.509 service's clock
was frozen when it was built.  Now the bootstrap reads the configuration's
``wall_clock`` for every message; the tests inject one.
"""

from __future__ import annotations

import datetime

from mls2p import ProfileConfig
from mls2p.errors import AlertDescription
from mls2p.testing import ThrowawayCA, config
from mlscore.credentials import X509AuthenticationService
from mlscore.crypto import get_suite
from mlscore.leaf_node import Lifetime
from mlstls.connection import ConnectionTerminated, HandshakeCompleted
from mlstls.testing import TlsPair

NOW = 1_900_000_000  # seconds since the epoch, in 2030
DAY = 86_400


def clock(at: float):
    return lambda: at


def outcome(pair: TlsPair, side: str) -> ConnectionTerminated | HandshakeCompleted:
    pair.client.connect()
    pair.pump()
    return next(e for e in pair.events[side] if isinstance(e, (ConnectionTerminated, HandshakeCompleted)))


def test_an_expired_key_package_is_refused() -> None:
    expired = Lifetime(NOW - 10 * DAY, NOW - DAY)
    pair = TlsPair(client_profile=config(b"client", lifetime=expired),
                   server_profile=config(b"server", wall_clock=clock(NOW)))
    refused = outcome(pair, "server")
    assert isinstance(refused, ConnectionTerminated) and refused.alert == AlertDescription.ILLEGAL_PARAMETER
    assert "lifetime" in refused.reason
    valid = TlsPair(client_profile=config(b"client", lifetime=Lifetime(NOW - DAY, NOW + DAY), wall_clock=clock(NOW)),
                    server_profile=config(b"server", wall_clock=clock(NOW)))
    assert isinstance(outcome(valid, "server"), HandshakeCompleted)


def test_certificates_are_checked_at_the_time_of_each_connection() -> None:
    issued = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    root = ThrowawayCA.root("root", issued, days=3650)
    service = X509AuthenticationService([root.der])  # no time of its own

    def x509_profile(name: str, at: float):
        priv, pub = get_suite(1).generate_signature_key_pair()
        return ProfileConfig(credential=root.issue(name, 1, pub, issued, days=30), signature_priv=priv,
                             authentication_service=service, wall_clock=clock(at))

    def connect(at: float) -> ConnectionTerminated | HandshakeCompleted:
        return outcome(TlsPair(client_profile=x509_profile("client", at), server_profile=x509_profile("server", at)),
                       "server")

    assert isinstance(connect(NOW + DAY), HandshakeCompleted)
    expired = connect(NOW + 60 * DAY)
    assert isinstance(expired, ConnectionTerminated) and expired.alert == AlertDescription.BAD_CERTIFICATE
