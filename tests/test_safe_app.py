"""Safe application interface pieces: dictionaries, component lists, Safe AAD, the exporter tree."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mls2p.testing import two_party
from mlscore.crypto import get_suite
from mlscore.errors import DecodeError, MLSError, ReplayError, ValidationError
from mlscore.extensions import Extension, ExtensionType
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
