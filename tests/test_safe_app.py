"""Safe application interface pieces: dictionaries, component lists, Safe AAD, the exporter tree."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mls2p.testing import two_party
from mlscore.crypto import get_suite
from mlscore.errors import DecodeError, MLSError, ReplayError, ValidationError
from mlscore.extensions import Extension, ExtensionType, get_extension
from mlscore.group import Group, GroupConfig
from mlscore.messages import (
    AppDataUpdate,
    AppDataUpdateOperation,
    GroupContextExtensions,
    proposal_bytes,
    proposal_from_bytes,
)
from mlscore.safe_app import (
    AppDataDictionary,
    ComponentData,
    ExporterTree,
    SafeAAD,
    SafeAADItem,
    app_data_dictionary_extension,
    encode_authenticated_data,
    require_components,
    safe_aad_item,
    split_authenticated_data,
)

COMPONENT = 0x8001
"""A private-use component id."""


def test_dictionary_round_trip_and_order() -> None:
    dictionary = AppDataDictionary((ComponentData(1, b"a"), ComponentData(0x8001, b"b")))
    assert AppDataDictionary.from_bytes(dictionary.to_bytes()) == dictionary
    assert dictionary.get(0x8001) == b"b" and dictionary.get(7) is None
    with pytest.raises(DecodeError, match="sorted"):
        AppDataDictionary((ComponentData(2, b""), ComponentData(1, b"")))
    unsorted = bytes.fromhex("06" "000200" "000100")
    with pytest.raises(DecodeError, match="sorted"):
        AppDataDictionary.from_bytes(unsorted)
    with pytest.raises(DecodeError, match="sorted"):
        SafeAAD((SafeAADItem(5, b""), SafeAADItem(5, b"")))


def test_component_requirements() -> None:
    extension = app_data_dictionary_extension([COMPONENT])
    require_components([extension], [COMPONENT], "leaf")
    with pytest.raises(ValidationError, match="does not list"):
        require_components([extension], [0x8002], "leaf")
    with pytest.raises(ValidationError, match="no app_data_dictionary"):
        require_components([], [COMPONENT], "leaf")
    only_app_components = AppDataDictionary((ComponentData(1, bytes.fromhex("02" "8001")),))
    with pytest.raises(ValidationError, match="safe_aad"):
        require_components([Extension(ExtensionType.APP_DATA_DICTIONARY, only_app_components.to_bytes())],
                           [0x8001], "leaf")


def test_authenticated_data_split() -> None:
    safe = SafeAAD((SafeAADItem(0x8001, b"\x01"),))
    data = encode_authenticated_data(safe, b"application aad")
    assert split_authenticated_data(data) == (safe, b"application aad")
    assert safe_aad_item(safe, 0x8001) == b"\x01" and safe_aad_item(safe, 1) is None
    with pytest.raises(DecodeError, match="SafeAAD"):
        split_authenticated_data(b"\x40")


def test_exporter_tree_is_per_component_and_single_use() -> None:
    suite = get_suite(1)
    tree, twin = ExporterTree(suite, bytes(32)), ExporterTree(suite, bytes(32))
    first = tree.export(0x8001)
    assert first == twin.export(0x8001) and first != tree.export(0x8002)
    with pytest.raises(ReplayError):
        tree.export(0x8001)
    with pytest.raises(ValidationError):
        tree.export(1 << 16)
    assert ExporterTree(suite, bytes(31) + b"\x01").export(0x8001) != first


def test_group_safe_export_agrees_across_members() -> None:
    alice, bob = two_party()
    assert alice.safe_export(COMPONENT) == bob.safe_export(COMPONENT)


@given(st.binary(max_size=64))
def test_decoders_raise_only_our_errors(data: bytes) -> None:
    for decoder in (AppDataDictionary.from_bytes, SafeAAD.from_bytes, split_authenticated_data):
        with contextlib.suppress(MLSError):
            decoder(data)


# -- AppDataUpdate (section 4.7) ------------------------------------------------------------------------

COUNTER = 0x0F00


def counter(current: bytes | None, updates: list[bytes]) -> bytes:
    """A component whose data is a number each update adds to (an update of 0 is invalid)."""
    value = int.from_bytes(current, "big") if current is not None else 0
    for update in updates:
        if not int.from_bytes(update, "big"):
            raise ValidationError("the counter only moves forward")
        value += int.from_bytes(update, "big")
    return value.to_bytes(8, "big")


def dictionary_of(group: Group) -> dict[int, bytes]:
    extension = get_extension(group.context.extensions, ExtensionType.APP_DATA_DICTIONARY)
    if extension is None:
        return {}
    return {c.component_id: c.data for c in extension.decoded(AppDataDictionary).component_data}


def test_app_data_update_changes_both_members_group_context() -> None:
    update = AppDataUpdate(COUNTER, AppDataUpdateOperation.UPDATE, (5).to_bytes(1, "big"))
    assert proposal_from_bytes(proposal_bytes(update)) == update
    assert proposal_bytes(update) == b"\x00\x08\x0f\x00\x01\x01\x05"
    remove = AppDataUpdate(COUNTER, AppDataUpdateOperation.REMOVE)
    assert proposal_from_bytes(proposal_bytes(remove)) == remove

    config = GroupConfig(app_data_components={COUNTER: counter})
    alice, bob = two_party(config=config)
    first = alice.commit([update, AppDataUpdate(COUNTER, AppDataUpdateOperation.UPDATE, b"\x02")], force_path=False)
    bob = bob.process(first.message.to_bytes()).group  # type: ignore[attr-defined]
    alice = first.group
    assert dictionary_of(alice)[COUNTER] == dictionary_of(bob)[COUNTER] == (7).to_bytes(8, "big")
    assert alice.epoch_authenticator == bob.epoch_authenticator

    epoch = bob.epoch
    for bad in ([AppDataUpdate(COUNTER, AppDataUpdateOperation.UPDATE, b"\x00")],  # the component says no
                [AppDataUpdate(0x0F01, AppDataUpdateOperation.UPDATE, b"\x01")],  # nobody's component
                [remove, update],  # remove mixed with an update
                [update, GroupContextExtensions(alice.context.extensions)]):
        with pytest.raises(ValidationError):
            alice.commit(bad, force_path=False)
    assert bob.epoch == epoch

    gone = bob.commit([remove], force_path=False)
    alice = alice.process(gone.message.to_bytes()).group  # type: ignore[attr-defined]
    assert COUNTER not in dictionary_of(alice) and COUNTER not in dictionary_of(gone.group)
    with pytest.raises(ValidationError, match="no app data to remove"):
        alice.commit([remove], force_path=False)


def test_a_receiver_without_the_components_logic_refuses_the_commit() -> None:
    alice, bob = two_party(config=GroupConfig(app_data_components={COUNTER: counter}))
    commit = alice.commit([AppDataUpdate(COUNTER, AppDataUpdateOperation.UPDATE, b"\x01")], force_path=False)
    unaware = Group.from_state(bob.to_state(), config=GroupConfig())  # the same member, without the logic
    with pytest.raises(ValidationError, match="no logic"):
        unaware.process(commit.message.to_bytes())
