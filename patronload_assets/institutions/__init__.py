"""Institutions: what is one library's own, each in a folder of its own (``mit/``: its rules
module, the templates of its user records, its department tables, the synthetic warehouse of the
embedded default; its queries in ``sql/mit/``), each declaring one ``RULES``: the interface of
``domain/institution.py``, the only thing the engine asks.

``INSTITUTION`` selects one by name: a folder here, or a package elsewhere that registers its
``Rules`` under the ``patronload.institutions`` entry point, so adopting the project needs no fork.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.resources
from pathlib import Path

from ..configuration import DEFAULT_INSTITUTION, ConfigurationError
from ..domain.institution import Rules

FOLDER = Path(__file__).resolve().parent
DEFAULT = DEFAULT_INSTITUTION
ENTRY_POINTS = "patronload.institutions"


def queries_folder(name: str) -> Path:
    """A built-in institution's queries: ``sql/<name>/``, installed as ``patronload_assets.sql``."""
    return Path(str(importlib.resources.files("patronload_assets.sql").joinpath(name)))


def built_in() -> list[str]:
    return sorted(path.name for path in FOLDER.iterdir() if (path / "__init__.py").is_file())


def registered() -> dict[str, importlib.metadata.EntryPoint]:
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINTS)}


@functools.cache
def load(name: str = DEFAULT) -> Rules:
    """The rules of the institution ``name``: a folder here first, then a registered package."""
    name = name.strip().lower() or DEFAULT
    folders, packages = built_in(), registered()
    if name in folders:
        found = importlib.import_module(f"{__name__}.{name}").RULES
    elif name in packages:
        found = packages[name].load()
        found = getattr(found, "RULES", found)  # the entry point may name the package or its RULES
    else:
        known = ", ".join([*folders, *packages])
        raise ConfigurationError(
            f"INSTITUTION={name}: no such institution (known: {known}); add a folder under "
            f"patronload_assets/institutions/ or install a package registering it under {ENTRY_POINTS}"
        )
    if not isinstance(found, Rules):
        raise ConfigurationError(f"INSTITUTION={name}: {found!r} is not a patronload Rules")
    return found
