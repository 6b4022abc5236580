"""docs/architecture.md's concept table points at code that exists: every file or folder it
names, and every class, function or constant it names beside a file (`ports.EventStore`,
`sqlite.py` `SqliteDatabase`), so the table cannot drift from the tree unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "shared" / "meterline"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
FILE_SUFFIXES = (".py", ".tf", ".yaml", ".md", ".js", ".css")


def concept_rows() -> list[tuple[str, str]]:
    """(concept, where) of each row of the table under "Where each concept lives"."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Where each concept lives", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and cells != ["concept", "where"] and not set(cells[0]) <= {"-"}:
            rows.append((cells[0], cells[1]))
    return rows


def resolve(name: str, folder: Path | None) -> Path | None:
    """A path as the table writes it: from the package or the repo root, or, written bare
    (`app.py`), in the folder of the path named before it in the same cell."""
    candidates = [folder / name] if folder is not None and "/" not in name else []
    candidates += [PACKAGE / name, REPO_ROOT / name]
    return next((c for c in candidates if c.exists()), None)


def defines(path: Path, symbol: str) -> bool:
    pattern = rf"^\s*(?:class|def|async def)\s+{re.escape(symbol)}\b|^\s*{re.escape(symbol)}\s*[:=]"
    return re.search(pattern, path.read_text(), re.M) is not None


def problems(where: str) -> list[str]:
    found = []
    folder: Path | None = None  # where a bare file name is looked up
    current: Path | None = None  # the file a bare symbol is looked up in
    for token in re.findall(r"`([^`]+)`", where):
        if "/" in token or token.endswith(FILE_SUFFIXES):
            path = resolve(token, folder)
            if path is None:
                found.append(f"{token}: no such file or folder")
                continue
            folder = path if path.is_dir() else path.parent
            current = path if path.is_file() else None
        elif re.fullmatch(r"[\w.]+\.\w+", token):  # module.symbol, from the package
            module, symbol = token.rsplit(".", 1)
            path = resolve(module.replace(".", "/") + ".py", None)
            if path is None:
                found.append(f"{token}: no module {module}")
            elif not defines(path, symbol):
                found.append(f"{token}: {path.relative_to(REPO_ROOT)} defines no {symbol}")
        elif re.fullmatch(r"\w+", token) and current is not None and current.suffix == ".py":
            if not defines(current, token):
                found.append(f"{token}: {current.relative_to(REPO_ROOT)} defines no {token}")
    return found


def test_the_table_has_its_rows():
    assert len(concept_rows()) > 30


@pytest.mark.parametrize("concept, where", concept_rows(), ids=lambda v: v[:40])
def test_every_concept_points_at_code_that_exists(concept, where):
    assert re.search(r"`[^`]+`", where), f"{concept!r} names no file"
    assert problems(where) == []


def test_a_wrong_path_or_symbol_is_caught():
    assert problems("`core/nowhere.py`") == ["core/nowhere.py: no such file or folder"]
    assert problems("`ports.NoSuchPort`") == ["ports.NoSuchPort: shared/meterline/ports.py defines no NoSuchPort"]
    assert problems("`adapters/embedded/sqlite_queue.py`; `sqlite_nothing.py`") == ["sqlite_nothing.py: no such file or folder"]
    assert problems("`adapters/embedded/sqlite.py` `NoSuchClass`") == [
        "NoSuchClass: shared/meterline/adapters/embedded/sqlite.py defines no NoSuchClass"]
    assert problems("`local/server.py`, `app.py`, `cli.py`") == []
