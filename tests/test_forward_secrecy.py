"""Forward secrecy in memory: once an epoch is replaced, nothing in the process still holds its secrets.

Python cannot zero memory, so the promise is "no reference left": the test
takes a secret of an old epoch and the old leaf's private key, lets the
session move on, collects garbage, and asks the garbage collector who still
refers to those very byte strings.  (A process-wide cache keyed by raw AEAD
keys, and a cache of parsed signature keys, used to keep them alive.)
"""

from __future__ import annotations

import gc

from mls2p.testing import Pair, pump, sent
from mlscore.group import Group


def referrers(probe: list[bytes]) -> list[object]:
    gc.collect()
    return [r for r in gc.get_referrers(probe[0]) if r is not probe]


def old_epoch_secrets(group: Group) -> list[bytes]:
    secrets = group._secrets  # white-box: the epoch's own secret store
    return [secrets.encryption_secret, secrets.exporter_secret, secrets.init_secret,
            *group._path_state.keys.values()]  # the leaf's and path's HPKE private keys


def test_replaced_epochs_leave_no_secret_reachable() -> None:
    pair = Pair()
    pump(pair.alice, pair.bob, sent(pair.alice.update()))
    group = pair.bob.group
    assert group is not None and group.epoch == 2
    probes = [[secret] for secret in old_epoch_secrets(group)]
    del group
    for i in range(2):  # two more epochs, both directions, each confirmed
        side, other = (pair.bob, pair.alice) if i == 0 else (pair.alice, pair.bob)
        pump(side, other, sent(side.update()))
    assert pair.in_sync() and pair.bob.epoch == 4
    for probe in probes:
        assert referrers(probe) == [], "an old epoch's secret is still referenced"


def test_traffic_keys_of_an_old_epoch_are_not_cached_by_the_suite() -> None:
    pair = Pair()
    group = pair.alice.group
    assert group is not None
    message = group.protect(b"application data in epoch 1")
    assert pair.bob.group is not None and pair.bob.group.process(message).data  # type: ignore[union-attr]
    suite = group.suite
    assert not [v for v in vars(suite).values() if isinstance(v, dict) and v], "the suite caches something"
