"""Where a browser test writes what a person may want to look at (screenshots, pages):
test-artifacts/, ignored by git; the run's summary lists them (conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
saved: list[Path] = []


def save_artifact(name: str) -> Path:
    """Where a test writes an artifact (test-artifacts/, ignored by git); listed at the end."""
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    saved.append(path)
    return path
