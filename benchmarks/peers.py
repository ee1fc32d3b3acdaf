"""Two benchmark processes that trust each other by key: the keys are written to a folder both read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mls2p.config import ProfileConfig
from mlscore.credentials import Credential, PinnedKeys, key_fingerprint
from mlscore.crypto import get_suite

NAMES = ("client", "server")


def make_keys(folder: Path) -> None:
    """A signature key pair for each of NAMES, in ``folder``/keys.json (a temporary folder: test keys)."""
    suite = get_suite(1)
    keys = {name: [part.hex() for part in suite.generate_signature_key_pair()] for name in NAMES}
    (folder / "keys.json").write_text(json.dumps(keys))


def profile(folder: Path, name: str, **overrides: Any) -> ProfileConfig:
    """``name``'s profile from the keys in ``folder``, pinning every name's key (so each trusts the other)."""
    keys = json.loads((folder / "keys.json").read_text())
    pins = {peer.encode(): {key_fingerprint(bytes.fromhex(pair[1]))} for peer, pair in keys.items()}
    return ProfileConfig(credential=Credential.basic(name.encode()), signature_priv=bytes.fromhex(keys[name][0]),
                         authentication_service=PinnedKeys(pins), **overrides)
