"""The Safe Application Interface pieces of draft-ietf-mls-extensions that the profile uses.

* ``app_data_dictionary`` (extension 0x0006, the draft's suggested value): a
  sorted dictionary of component data in LeafNodes and the GroupContext.
* ``app_components`` (0x0001) and ``safe_aad`` (0x0002): ComponentsLists that
  say which components a member supports / which components use Safe AAD.
* SafeAAD: when the GroupContext lists ``safe_aad``, every message's
  ``authenticated_data`` starts with a sorted list of per-component items.

Every function takes the component id as a parameter: the two-party profile's
id is TBD in its draft, so it is configuration, not a constant baked in here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

from .codec import Reader, Struct, Writer
from .crypto import CipherSuite
from .errors import DecodeError, ValidationError
from .extensions import Extension, ExtensionType, get_extension
from .messages import AppDataUpdate, AppDataUpdateOperation
from .schedule.secret_tree import take_leaf_secret
from .tree import math as tree_math

APP_COMPONENTS = 0x0001
SAFE_AAD = 0x0002


def _check_sorted_unique(ids: Sequence[int], what: str) -> None:
    if any(b <= a for a, b in itertools.pairwise(ids)):
        raise DecodeError(f"{what} must be sorted by component id without duplicates")


@dataclass(frozen=True)
class ComponentData(Struct):
    component_id: int
    data: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.component_id).opaque(self.data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u16(), r.opaque())


@dataclass(frozen=True)
class AppDataDictionary(Struct):
    component_data: tuple[ComponentData, ...]

    def __post_init__(self) -> None:
        _check_sorted_unique([c.component_id for c in self.component_data], "AppDataDictionary")

    def encode(self, w: Writer) -> None:
        w.structs(self.component_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(tuple(r.structs(ComponentData)))

    def get(self, component_id: int) -> bytes | None:
        return next((c.data for c in self.component_data if c.component_id == component_id), None)


@dataclass(frozen=True)
class ComponentsList(Struct):
    component_ids: tuple[int, ...]

    def encode(self, w: Writer) -> None:
        w.vector(self.component_ids, Writer.u16)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(tuple(r.vector(Reader.u16)))


@dataclass(frozen=True)
class SafeAADItem(Struct):
    component_id: int
    aad_item_data: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.component_id).opaque(self.aad_item_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u16(), r.opaque())


@dataclass(frozen=True)
class SafeAAD(Struct):
    aad_items: tuple[SafeAADItem, ...] = ()

    def __post_init__(self) -> None:
        _check_sorted_unique([i.component_id for i in self.aad_items], "SafeAAD")

    def encode(self, w: Writer) -> None:
        w.structs(self.aad_items)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(tuple(r.structs(SafeAADItem)))


AppDataComponent = Callable[[bytes | None, Sequence[bytes]], bytes]
"""A component's logic for AppDataUpdate (section 4.7): (its current data or None, the updates of one commit in
order) -> its new data; raises ValidationError to make the commit invalid."""


def apply_app_data_updates(extensions: Sequence[Extension], updates: Sequence[AppDataUpdate],
                           components: Mapping[int, AppDataComponent]) -> tuple[Extension, ...]:
    """The GroupContext extensions after a commit's AppDataUpdate proposals (draft-ietf-mls-extensions 4.7).

    Per component, in the commit's order: one ``remove`` deletes its entry; one or more ``update``s go to its
    logic in ``components``, whose result replaces (or inserts) the entry, the dictionary kept sorted.  A
    dictionary that does not exist yet is added at the end.  Mixing remove with anything for one component, or a
    component nobody registered logic for, is invalid.
    """
    if not updates:
        return tuple(extensions)
    entries = app_data_entries(extensions)
    by_component: dict[int, list[AppDataUpdate]] = {}
    for update in updates:
        by_component.setdefault(update.component_id, []).append(update)
    for component_id, changes in by_component.items():
        removes = sum(change.op == AppDataUpdateOperation.REMOVE for change in changes)
        if removes and len(changes) > 1:
            raise ValidationError(f"component {component_id:#06x}: a remove must be its only AppDataUpdate")
        if removes:
            if component_id not in entries:
                raise ValidationError(f"component {component_id:#06x} has no app data to remove")
            del entries[component_id]
            continue
        logic = components.get(component_id)
        if logic is None:
            raise ValidationError(f"no logic for AppDataUpdate of component {component_id:#06x}")
        entries[component_id] = logic(entries.get(component_id), [change.update for change in changes])
    return with_app_data(extensions, entries)


def app_data_entries(extensions: Sequence[Extension]) -> dict[int, bytes]:
    """The ``app_data_dictionary`` of ``extensions`` as component id -> data (empty without one)."""
    extension = get_extension(extensions, ExtensionType.APP_DATA_DICTIONARY)
    if extension is None:
        return {}
    return {c.component_id: c.data for c in extension.decoded(AppDataDictionary).component_data}


def with_app_data(extensions: Sequence[Extension], entries: Mapping[int, bytes]) -> tuple[Extension, ...]:
    """``extensions`` with their ``app_data_dictionary`` holding ``entries`` (sorted), replaced in place or added
    at the end (section 4.7)."""
    dictionary = Extension(ExtensionType.APP_DATA_DICTIONARY, AppDataDictionary(
        tuple(ComponentData(i, entries[i]) for i in sorted(entries))).to_bytes())
    if get_extension(extensions, ExtensionType.APP_DATA_DICTIONARY) is None:
        return (*extensions, dictionary)
    return tuple(dictionary if e.extension_type == ExtensionType.APP_DATA_DICTIONARY else e for e in extensions)


def app_data_dictionary_extension(component_ids: Sequence[int]) -> Extension:
    """An ``app_data_dictionary`` listing the components in both ``app_components`` and ``safe_aad``."""
    ids = ComponentsList(tuple(sorted(set(component_ids)))).to_bytes()
    dictionary = AppDataDictionary((ComponentData(APP_COMPONENTS, ids), ComponentData(SAFE_AAD, ids)))
    return Extension(ExtensionType.APP_DATA_DICTIONARY, dictionary.to_bytes())


def listed_components(extensions: Sequence[Extension], list_id: int = APP_COMPONENTS) -> tuple[int, ...]:
    """The components the extensions' app_data_dictionary lists in ``app_components`` (or ``list_id``)."""
    encoded = app_data_entries(extensions).get(list_id)
    return ComponentsList.from_bytes(encoded).component_ids if encoded is not None else ()


def require_components(extensions: Sequence[Extension], component_ids: Sequence[int], where: str) -> None:
    """Raise unless the extensions' app_data_dictionary lists each component in both lists."""
    if get_extension(extensions, ExtensionType.APP_DATA_DICTIONARY) is None:
        raise ValidationError(f"{where} has no app_data_dictionary extension")
    for list_id, name in ((APP_COMPONENTS, "app_components"), (SAFE_AAD, "safe_aad")):
        listed = listed_components(extensions, list_id)
        missing = [c for c in component_ids if c not in listed]
        if missing:
            raise ValidationError(f"{where} does not list component(s) {missing} in {name}")


def encode_authenticated_data(safe_aad: SafeAAD, rest: bytes = b"") -> bytes:
    return safe_aad.to_bytes() + rest


def split_authenticated_data(data: bytes) -> tuple[SafeAAD, bytes]:
    """The SafeAAD prefix of ``authenticated_data`` and whatever the application put after it."""
    reader = Reader(data)
    try:
        safe_aad = SafeAAD.decode(reader)
    except DecodeError as exc:
        raise DecodeError(f"authenticated_data does not start with a SafeAAD: {exc}") from None
    return safe_aad, reader.fixed(reader.remaining)


def safe_aad_item(safe_aad: SafeAAD, component_id: int) -> bytes | None:
    return next((i.aad_item_data for i in safe_aad.aad_items if i.component_id == component_id), None)


EXPORTER_TREE_LEAVES = 1 << 16
"""One exporter-tree leaf per 16-bit component id."""


class ExporterTree:
    """The safe exporter of draft-ietf-mls-extensions: one secret per component, used once.

    The root is the epoch's ``application_export_secret``; the tree is derived
    like RFC 9420's secret tree over 2^16 leaves, and the secret of leaf
    ``component_id`` is that component's export.  Exporting consumes the leaf
    (and every parent on the way down), so what was exported can be deleted
    later in the same epoch: forward secrecy inside an epoch, which the plain
    MLS-Exporter cannot give because exporter_secret lives all epoch.
    """

    def __init__(self, suite: CipherSuite, application_export_secret: bytes) -> None:
        self.suite = suite
        self._nodes = {tree_math.root(EXPORTER_TREE_LEAVES): application_export_secret}

    def __repr__(self) -> str:
        return f"ExporterTree(stored_nodes={len(self._nodes)})"

    def export(self, component_id: int) -> bytes:
        """The component's secret for this epoch; a second call raises ReplayError."""
        if not 0 <= component_id < EXPORTER_TREE_LEAVES:
            raise ValidationError(f"component id {component_id} is not a 16-bit value")
        return take_leaf_secret(self.suite, self._nodes, component_id, EXPORTER_TREE_LEAVES)
