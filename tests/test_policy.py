"""The rekey policy: a pure query on a per-connection meter, applied through the shared bootstrap."""

from __future__ import annotations

import pytest

from mls2p import ConfigurationError, ProfileEndpoint, RekeyMeter, RekeyPolicy
from mls2p.testing import config


def test_meter_counts_bytes_across_batches_and_time_since_keys() -> None:
    meter = RekeyMeter(RekeyPolicy(max_bytes=1000, max_seconds=10.0))
    assert not meter.due(1e9)  # no keys yet: no time trigger
    meter.restart(100.0)
    for _ in range(9):
        meter.record_sent(100)  # many small batches add up (they used to be forgotten per batch)
    assert not meter.due(101.0)
    meter.record_sent(100)
    assert meter.due(101.0)
    assert meter.due(101.0)  # a query: asking again changes nothing
    meter.restart(102.0)
    assert not meter.due(111.9)
    assert meter.due(112.0)


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        RekeyPolicy(max_bytes=0)
    with pytest.raises(ConfigurationError):
        RekeyPolicy(max_seconds=-1)
    with pytest.raises(ConfigurationError):
        RekeyPolicy(max_seconds=float("nan"))


def test_endpoint_rekeys_only_when_synced_and_due() -> None:
    client = ProfileEndpoint(config(b"c", rekey=RekeyPolicy(max_bytes=1000)), is_client=True)
    server = ProfileEndpoint(config(b"s"), is_client=False)
    hello = client.start()
    client.record_sent(5000)
    assert not client.rekey_due(0.0)  # never before the group exists
    reply = server.receive(hello[0].data, 1.0)  # type: ignore[union-attr]
    client.receive(reply[0].data, 2.0)  # type: ignore[union-attr]
    assert not client.rekey_due(2.0)  # new keys restarted the meter
    client.record_sent(999)
    assert not client.rekey_due(3.0)
    client.record_sent(1)
    assert client.rekey_due(3.0)
    assert client.rekey()  # the ConnectionUpdate
    assert not client.rekey_due(3.0) and client.rekey() == []  # one rekey in flight at a time
