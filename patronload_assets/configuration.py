"""One setting read from the environment: the error a setting that must not run raises, and
number settings. At the bottom of the package: timing.py and settings.py both read settings, and
neither imports the other."""

from __future__ import annotations

from collections.abc import Mapping


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
