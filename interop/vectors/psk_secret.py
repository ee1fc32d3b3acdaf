"""psk_secret.json: the chained psk_secret over 0..n external PSKs."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.schedule.psk import PreSharedKeyID, compute_psk_secret


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    psks = [(PreSharedKeyID.external(h(p["psk_id"]), h(p["psk_nonce"])), h(p["psk"])) for p in entry["psks"]]
    assert compute_psk_secret(suite, psks) == h(entry["psk_secret"]), "psk_secret"
