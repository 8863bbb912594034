"""Helpers for the recipe tests: fixture paths and finding a marker's line number."""

from pathlib import Path

DATA = Path(__file__).parent / "data" / "recipes"
CORPUS = Path(__import__("os").environ.get("STEPCAB_CORPUS", Path(__file__).parents[2] / "shared" / "corpus"))


def line_of(path: Path, marker: str) -> int:
    """1-based line number of the first line containing ``marker``."""
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if marker in line:
            return n
    raise AssertionError(f"{marker!r} not in {path}")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p
