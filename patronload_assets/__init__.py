"""patronload: the daily load of staff and student records into Alma patron accounts."""

from .definitions import defs

__all__ = ["defs"]
