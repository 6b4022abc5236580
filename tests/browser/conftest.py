"""Browser tests: real headless Chromium (Debian's `chromium`), driven by Playwright for Python
through `executable_path`. No browser is ever downloaded (`playwright install` is never run).

When chromium is missing these tests are skipped with the reason, and the run's summary says
what to install, except in CI (CI=true), where a missing browser fails them: `.ci/run`
installs it, so its absence there is a broken setup, not a choice.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.artifacts import saved

# The flags REFERENCE.md lists for Debian's chromium on these machines (Playwright adds a
# fresh --user-data-dir of its own).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
INSTALL = "apt-get update && apt-get install -y --no-install-recommends chromium"
_missing: list[str] = []


def chromium_path() -> str | None:
    """METERLINE_CHROMIUM if set (another build, elsewhere), else Debian's `chromium`."""
    chosen = os.environ.get("METERLINE_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


def _unavailable(reason: str) -> None:
    _missing.append(reason)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must have it: .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        _unavailable(f"browser tests need Debian's chromium, which is not installed: {INSTALL}"
                     + (f" (METERLINE_CHROMIUM={os.environ['METERLINE_CHROMIUM']} is not a file)"
                        if os.environ.get("METERLINE_CHROMIUM") else ""))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("browser tests need Playwright for Python: make venv (requirements-dev.txt pins it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def pytest_terminal_summary(terminalreporter) -> None:
    if _missing:
        terminalreporter.write_line(f"browser tests NOT RUN: {_missing[0]}", yellow=True, bold=True)
    for path in saved:
        if path.exists():
            terminalreporter.write_line(f"browser test artifact: {path}")
