"""The official RFC 9420 test vectors, through the same runner as ``python -m interop vectors``.

Without the vector folder these tests cannot prove anything, so under CI
(``CI=true``) a missing folder is a failure; on a developer machine the tests
are skipped with a reason that says where the files come from.
"""

from __future__ import annotations

import os

import pytest

from interop.vectors import VECTOR_FILES, default_dir, load, run_entry

VECTORS = default_dir()
WHERE = (f"RFC 9420 test vectors not found at {VECTORS}: put the JSON files of "
         "https://github.com/mlswg/mls-implementations/tree/main/test-vectors in ../shared/mls-test-vectors "
         "beside the checkout, or point MLS_TEST_VECTORS at their folder")


@pytest.fixture(autouse=True)
def _vectors_present() -> None:
    if VECTORS.is_dir():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(WHERE + " (required under CI=true)", pytrace=False)
    pytest.skip(WHERE)


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vector_file(name: str) -> None:
    outcomes = [run_entry(name, index, entry) for index, entry in enumerate(load(name))]
    assert outcomes, f"{name} has no entries"
    bad = [o for o in outcomes if o.status != "passed"]
    assert not bad, "\n".join(f"{o.file}[{o.index}] suite {o.cipher_suite}: {o.status}: {o.detail}" for o in bad[:10])


def test_runner_reports_a_wrong_answer_as_failed() -> None:
    entry = dict(load("psk_secret")[1])
    entry["psk_secret"] = "00" * 32
    outcome = run_entry("psk_secret", 1, entry)
    assert outcome.status == "failed" and "psk_secret" in outcome.detail
