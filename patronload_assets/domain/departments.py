"""Department tables: department code -> Alma statistical category (docs/patron-rules.md §7)."""

from __future__ import annotations

import json
from pathlib import Path

from .values import to_text


class DepartmentTableError(ValueError):
    """A department table that cannot be used as it is."""


class _Pairs(list):
    """A JSON object's (key, value) pairs in order, repeated keys included."""


def load_department_table(path: str | Path) -> dict[str, str]:
    """Read a JSON object of ``{"code": "category", ...}``.

    A code given two different categories is a configuration error naming every such code: a
    plain JSON loader would silently keep the last one and mis-file patrons.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DepartmentTableError(f"cannot read department table {path}: {error}") from error
    categories: dict[str, set[str]] = {}
    try:
        # Pairs, not a dict: a dict would hide the repeated codes.
        pairs = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as error:
        raise DepartmentTableError(f"department table {path} is not valid JSON: {error}") from error
    if not isinstance(pairs, _Pairs):
        raise DepartmentTableError(f"department table {path} must be a JSON object of code: category")
    table: dict[str, str] = {}
    for raw_code, raw_category in pairs:
        code, category = to_text(raw_code), to_text(raw_category)
        if code is None or category is None or not isinstance(raw_category, str | int):
            raise DepartmentTableError(
                f"department table {path}: entry {raw_code!r}: {raw_category!r} "
                "needs a code and a text category"
            )
        categories.setdefault(code, set()).add(category)
        table[code] = category
    conflicts = {code: sorted(found) for code, found in categories.items() if len(found) > 1}
    if conflicts:
        listed = "; ".join(f"{code}: {' / '.join(found)}" for code, found in sorted(conflicts.items()))
        raise DepartmentTableError(
            f"department table {path} gives {len(conflicts)} code(s) more than one category, "
            f"fix each to one: {listed}"
        )
    return table
