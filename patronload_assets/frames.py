"""Warehouse rows between assets: Arrow-backed frames (stored by :mod:`state`).

A million rows of twenty text columns take about 300 MB as Arrow strings against well over a
gigabyte as Python objects, and are written without pickling.
"""

from collections.abc import Iterable, Iterator, Sequence

import pandas as pd
import pyarrow as pa

from .domain.values import as_text

BATCH_ROWS = 20_000
TEXT = pa.string()


def frame_from_batches(columns: Sequence[str], batches: Iterable[list[tuple]], repairs) -> pd.DataFrame:
    """Text columns from warehouse batches; a value of another type (a number, a date, bytes)
    becomes the text the warehouse meant, counted in ``repairs``."""
    tables = []
    for batch in batches:
        arrays = []
        for values in zip(*batch, strict=True) if batch else [()] * len(columns):
            if any(value is not None and type(value) is not str for value in values):
                values = [as_text(value, repairs) for value in values]
            arrays.append(pa.array(values, type=TEXT))
        tables.append(pa.Table.from_arrays(arrays, names=list(columns)))
    table = (
        pa.concat_tables(tables) if tables else pa.table({column: pa.array([], TEXT) for column in columns})
    )
    return table.to_pandas(types_mapper=pd.ArrowDtype)


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
