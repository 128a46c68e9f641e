"""Warehouse rows between assets: Arrow-backed frames (stored by :mod:`state`).

A million rows of twenty text columns take about 300 MB as Arrow strings against well over a
gigabyte as Python objects, and are written without pickling.
"""

from collections.abc import Iterable, Iterator, Sequence

import pandas as pd
import pyarrow as pa

from ..domain.values import as_text

BATCH_ROWS = 20_000
TEXT = pa.string()


def frame_from_batches(columns: Sequence[str], batches: Iterable[list[tuple]], repairs) -> pd.DataFrame:
    """Text columns from warehouse batches; a value of another type (a number, a date, bytes)
    becomes the text the warehouse meant, counted in ``repairs``."""
    tables = []
    for batch in batches:
        columns_of_batch = zip(*batch, strict=True) if batch else [()] * len(columns)
        arrays = [_text_array(values, repairs) for values in columns_of_batch]
        tables.append(pa.Table.from_arrays(arrays, names=list(columns)))
    table = (
        pa.concat_tables(tables) if tables else pa.table({column: pa.array([], TEXT) for column in columns})
    )
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _text_array(values: Sequence[object], repairs) -> pa.Array:
    """A column of a batch as Arrow text. Arrow's own inference says, in C, whether every value is
    text or missing (a string or null array); anything else (a number, a date, bytes) is made the
    text the warehouse meant, value by value, and counted."""
    try:
        inferred = pa.array(values)
    except (pa.ArrowException, OverflowError):  # mixed kinds, or an integer beyond 64 bits
        inferred = None
    if inferred is not None and inferred.type == TEXT:
        return inferred
    if inferred is not None and inferred.type == pa.null():
        return pa.nulls(len(values), TEXT)
    return pa.array([as_text(value, repairs) for value in values], type=TEXT)


def records(frame: pd.DataFrame, keep: Sequence[int] | None = None) -> Iterator[dict[str, str | None]]:
    """The frame's rows as dicts (``None`` for missing), a batch at a time: memory stays flat.
    With ``keep`` (ascending positions), only those rows, without copying the frame."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    mask = None
    if keep is not None:
        mask = bytearray(len(frame))
        for position in keep:
            mask[position] = 1
    start = 0
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        if mask is not None:
            selected = pa.array(mask[start : start + len(batch)], type=pa.uint8()).cast(pa.bool_())
            start += len(batch)
            batch = batch.filter(selected)
        yield from batch.to_pylist()


def column(frame: pd.DataFrame, name: str) -> list[str | None]:
    return pa.Table.from_pandas(frame[[name]], preserve_index=False).column(0).to_pylist()
