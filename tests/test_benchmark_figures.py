"""Benchmark output is data: one flat object of named numbers, nothing else gets written."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import check_figures, write_json


def test_flat_named_numbers_and_strings_are_written_sorted(tmp_path) -> None:
    out = tmp_path / "figures.json"
    write_json(str(out), {"rekey_ms": 1.5, "rounds": 3, "openssl_version": "OpenSSL 3"})
    assert json.loads(out.read_text()) == {"openssl_version": "OpenSSL 3", "rekey_ms": 1.5, "rounds": 3}
    assert list(json.loads(out.read_text())) == sorted(["rekey_ms", "rounds", "openssl_version"])


@pytest.mark.parametrize("bad", [{"nested": {"a": 1}}, {"nan": float("nan")}, {"flag": True}, {"": 1.0},
                                 {"list": [1, 2]}])
def test_anything_but_flat_finite_figures_is_refused_before_writing(tmp_path, bad) -> None:
    out = tmp_path / "figures.json"
    with pytest.raises(ValueError):
        write_json(str(out), bad)
    assert not out.exists()
    with pytest.raises(ValueError):
        check_figures(bad)
