"""One setting read from the environment: the error a setting that must not run raises, and
number settings. At the bottom of the package: timing.py and settings.py both read settings, and
neither imports the other."""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_INSTITUTION = "mit"  # INSTITUTION unset


class ConfigurationError(RuntimeError):
    """A deployment that must not run as configured."""


def number_setting(
    environ: Mapping[str, str], name: str, default: float, kind: type = int, least: float | None = None
) -> float:
    """A positive number setting (at least ``least``, when given), or its default; a clear error
    naming the setting otherwise."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if value <= 0 or (least is not None and value < least):
        at_least = "" if least is None else f" of at least {least}"
        raise ConfigurationError(f"{name} must be a positive {kind.__name__}{at_least}, not {text!r}")
    return value


def institution_setting(environ: Mapping[str, str]) -> str:
    """``INSTITUTION`` as written (trimmed, lower case), or the default; institutions.load checks it."""
    return environ.get("INSTITUTION", "").strip().lower() or DEFAULT_INSTITUTION


def consortium_key_prefix(environ: Mapping[str, str]) -> list[str]:
    """With ``CONSORTIUM`` set (several institutions on one deployment, each a code location), the
    institution's name: its asset keys, pool and runs are its own (``mit/staff_zip``). Unset, none:
    a deployment of one institution keeps the keys it always had."""
    value = environ.get("CONSORTIUM", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return []
    if value not in ("1", "true", "yes"):
        raise ConfigurationError(f"CONSORTIUM must be true or false, not {value!r}")
    return [institution_setting(environ)]


# Read once, at import: asset keys and pools are part of the definitions, the same in every process
# that loads them (the code server, and each run's task, with the code location's settings).
KEY_PREFIX = consortium_key_prefix(os.environ)
