"""How the profile marks and checks its MLS messages (draft-kohbrok-mls-two-party-profile-01 section 3).

Every commit and EpochKeyUpdate carries, in its ``authenticated_data``, a Safe
AAD item of the profile's component whose value is the one-byte
:class:`~mls2p.wire.TwoPartyMessageType`; it is checked before anything else is
processed.  Every leaf and the GroupContext list the component in an
``app_data_dictionary`` (draft-ietf-mls-extensions), and the GroupContext
requires that extension of every member.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from mlscore import safe_app
from mlscore.apq import APQ_COMPONENT, APQMessagePair, is_message_pair
from mlscore.codec import Reader, Writer, decode_enum
from mlscore.errors import ValidationError
from mlscore.extensions import Extension, ExtensionType, RequiredCapabilities
from mlscore.framing import MLSMessage, PrivateMessage, PublicMessage
from mlscore.key_package import default_capabilities
from mlscore.leaf_node import Capabilities

from .config import ProfileConfig
from .wire import TwoPartyMessageType

T = TypeVar("T")


def authenticated_data(component_id: int, msg_type: TwoPartyMessageType) -> bytes:
    """The ``authenticated_data`` of a profile message: one Safe AAD item naming its type."""
    item = safe_app.SafeAADItem(component_id, Writer().u8(msg_type).getvalue())
    return safe_app.encode_authenticated_data(safe_app.SafeAAD((item,)))


def check_type(data: bytes, component_id: int, allowed: set[TwoPartyMessageType]) -> None:
    """Raise ValidationError unless ``data`` carries our Safe AAD item with one of the ``allowed`` types."""
    safe_aad, _ = safe_app.split_authenticated_data(data)
    item = safe_app.safe_aad_item(safe_aad, component_id)
    if item is None:
        raise ValidationError("message lacks the two-party profile Safe AAD item")
    reader = Reader(item)
    value = decode_enum(TwoPartyMessageType, reader.u8(), "two-party message type")
    reader.finish()
    if value not in allowed:
        raise ValidationError(f"Safe AAD message type {value.name} not allowed here")


Commit = MLSMessage | APQMessagePair
"""A profile commit as received: one MLSMessage, or an APQ FULL commit's two (T and PQ)."""


def checked_commit(body: bytes, component_id: int, allowed: set[TwoPartyMessageType]) -> Commit:
    """A received commit, decoded, whose Safe AAD type is one of ``allowed`` (nothing else checked yet); an APQ
    FULL commit's two halves must both carry it."""
    commit = decode_commit(body)
    if isinstance(commit, APQMessagePair) and _commit_aad(commit.t_message) != _commit_aad(commit.pq_message):
        raise ValidationError("the two halves of a FULL commit carry different authenticated data")
    check_type(_commit_aad(t_half(commit)), component_id, allowed)
    return commit


def decode_commit(body: bytes) -> Commit:
    """A profile commit's body decoded (nothing checked): an APQ FULL commit's pair, or one MLSMessage."""
    return APQMessagePair.from_message_bytes(body) if is_message_pair(body) else MLSMessage.from_bytes(body)


def t_half(commit: Commit) -> MLSMessage:
    """The (T group's) MLSMessage of a profile commit: the message itself, or a FULL commit's T half."""
    return commit.t_message if isinstance(commit, APQMessagePair) else commit


def _commit_aad(message: MLSMessage) -> bytes:
    """The ``authenticated_data`` of a handshake message, readable before it is opened."""
    inner = message.body
    if isinstance(inner, PublicMessage):
        return inner.content.authenticated_data
    if isinstance(inner, PrivateMessage):
        return inner.authenticated_data
    raise ValidationError(f"expected a commit, got {message.wire_format.name}")


def decode_as(body: bytes, expected: type[T], what: str) -> T:
    """The body of an MLSMessage that must be of type ``expected`` (a KeyPackage, a Welcome...)."""
    message = MLSMessage.from_bytes(body)
    if not isinstance(message.body, expected):
        raise ValidationError(f"{what} must carry a {expected.__name__}, got {message.wire_format.name}")
    return message.body


def message_epoch(commit: Commit) -> int:
    """The (T group's) epoch in a checked commit's header (readable before it is decrypted)."""
    body = t_half(commit).body
    if isinstance(body, PublicMessage):
        return body.content.epoch
    assert isinstance(body, PrivateMessage)  # checked_commit let nothing else through
    return body.epoch


def commit_hash(encoded: bytes) -> bytes:
    """Collision-resistant digest of a commit as received (the draft lets us keep a hash)."""
    return hashlib.sha256(encoded).digest()


def require_component(extensions: Sequence[Extension], component_id: int, where: str) -> None:
    """Raise ValidationError unless ``extensions`` list the profile's component (leaf or GroupContext)."""
    safe_app.require_components(extensions, [component_id], where)


def capabilities(suite_id: int, offered: Sequence[int] = ()) -> Capabilities:
    """A leaf's capabilities: the suite (and every suite ``offered`` with it, mls2p.negotiation, APQ's PQ suite
    among them), and the app_data_dictionary extension."""
    suites = tuple(offered) if suite_id in offered else (suite_id, *offered)
    return replace(default_capabilities(suite_id, extensions=(ExtensionType.APP_DATA_DICTIONARY,)),
                   cipher_suites=suites)


def leaf_extensions(config: ProfileConfig, *, apq: bool = False) -> tuple[Extension, ...]:
    """Our leaf's extensions: the profile's component, and APQ's when we offer it (the signed APQ mark,
    mls2p.negotiation)."""
    components = sorted({config.component_id, APQ_COMPONENT}) if apq else [config.component_id]
    return (safe_app.app_data_dictionary_extension(components), *config.leaf_extensions)


def group_extensions(config: ProfileConfig) -> tuple[Extension, ...]:
    required = RequiredCapabilities(extension_types=(ExtensionType.APP_DATA_DICTIONARY,))
    return (safe_app.app_data_dictionary_extension([config.component_id]),
            Extension(ExtensionType.REQUIRED_CAPABILITIES, required.to_bytes()))
