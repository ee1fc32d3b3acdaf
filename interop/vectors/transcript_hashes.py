"""transcript-hashes.json: confirmation tag and both transcript hashes of one commit."""

from __future__ import annotations

from mlscore.crypto import get_suite
from mlscore.framing import AuthenticatedContent, constant_time_equal
from mlscore.schedule.key_schedule import confirmed_transcript_hash, interim_transcript_hash


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex
    content = AuthenticatedContent.from_bytes(h(entry["authenticated_content"]))
    confirmed = confirmed_transcript_hash(suite, h(entry["interim_transcript_hash_before"]),
                                          content.confirmed_transcript_hash_input())
    assert confirmed == h(entry["confirmed_transcript_hash_after"]), "confirmed transcript hash"
    tag = content.auth.confirmation_tag
    assert tag is not None and constant_time_equal(suite.mac(h(entry["confirmation_key"]), confirmed), tag), \
        "confirmation tag"
    assert interim_transcript_hash(suite, confirmed, tag) == h(entry["interim_transcript_hash_after"]), "interim"
