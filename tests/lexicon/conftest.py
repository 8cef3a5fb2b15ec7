"""Shared fixture of the cemr.lexicon tests: writing small list files."""
from pathlib import Path

import pytest


@pytest.fixture
def write(tmp_path: Path):
    """``write(name, text, encoding="utf-8") -> path``: a file under ``tmp_path`` with these bytes."""

    def write(name: str, text: str, encoding: str = "utf-8") -> str:
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        return str(path)

    return write
