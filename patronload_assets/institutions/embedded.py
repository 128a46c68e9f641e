"""The embedded warehouse every institution's synthetic views are written to: a SQLite file."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_views(path: str | Path, views: Iterable[tuple[str, Sequence[str], Iterable[tuple]]]) -> Path:
    """A SQLite file with each ``(view, columns, rows)`` as a table of text columns.

    Written to a temporary name and moved into place, so a reader never sees half a warehouse.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{random.randrange(1 << 30)}.partial")
    with sqlite3.connect(partial) as connection:
        for view, columns, rows in views:
            connection.execute(f"CREATE TABLE {view} ({', '.join(f'{c} TEXT' for c in columns)})")
            marks = ", ".join("?" * len(columns))
            connection.executemany(f"INSERT INTO {view} VALUES ({marks})", rows)
    connection.close()
    partial.replace(path)
    return path
