"""Institutions: what is one library's own, each in a folder of its own (``mit/``: its rules
module, the templates of its user records, its department tables, the synthetic warehouse of the
embedded default).

The engine (extraction, cleaning, the XML writer, the checks, zips, buckets, state, changes,
reports) is meant to ask an institution through one small interface and know no institution's
name, column or code. Until that interface is written, the engine's modules that still name MIT's
rules import them from here, in the open: ``domain/load.py``, ``domain/named.py``,
``domain/checks.py``, ``assets.py``, and ``resources.py`` (the embedded warehouse).
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
DEFAULT = "mit"


def folder(name: str = DEFAULT) -> Path:
    """An institution's folder: its templates and department tables."""
    found = FOLDER / name
    if not (found / "rules.py").is_file():
        known = sorted(path.name for path in FOLDER.iterdir() if (path / "rules.py").is_file())
        raise ValueError(f"no institution {name!r} in {FOLDER}: the institutions are {', '.join(known)}")
    return found
