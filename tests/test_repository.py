"""The repository itself: a fresh clone must carry no generated files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = re.compile(r"(^|/)(\.venv|venv|__pycache__|\.mypy_cache|\.pytest_cache|\.ruff_cache|\.hypothesis)/"
                       r"|^(build|dist)/|\.pyc$|\.egg-info/")


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_no_generated_files_are_committed() -> None:
    files = _tracked_files()
    assert files, "git ls-files listed nothing"
    generated = [name for name in files if GENERATED.search(name)]
    assert not generated, f"{len(generated)} generated files are tracked, e.g. {generated[:3]}"


def test_the_pattern_recognises_what_it_must_refuse() -> None:
    for name in (".venv/bin/pip", "mlscore/__pycache__/x.cpython-311.pyc", "a.pyc", "pkg.egg-info/PKG-INFO"):
        assert GENERATED.search(name), name
    for name in ("mlscore/group.py", "docs/architecture.md", "tests/data/state-v1.bin"):
        assert not GENERATED.search(name), name
