"""A query result read batch by batch: what the output writers consume, so a large result is never whole in
memory on its way to the client.

The row count and the overflow (MAXREC cut) are known before the first batch is read: the control database
materializes the capped result on the server before streaming it (see
:meth:`dms.services.vo.executor.ControlDatabaseExecutor.stream`), and the query engine returns whole tables.
So the HTTP headers (``X-DMS-Overflow``), a FITS header's row count and VOParquet's status are exact. A
failure while the batches are read (the database connection lost) raises from the iterator; the writers
then end the document with an ERROR status where the format allows it (:class:`ResultTruncated`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dms.services.vo.errors import QueryError


class ResultTruncated(QueryError):  # type: ignore[misc, unused-ignore]
    """The result failed after part of it was sent; the document already ends with the error in-band
    (VOTable ``QUERY_STATUS`` = ``ERROR``, JSON ``"error"``). A sync response ends there normally; an async
    job ends in ERROR with this message."""


@dataclass
class ResultStream:
    """A result's schema, its row count and overflow (known up front), and its rows as record batches (one
    pass). :meth:`close` releases what the batches are read from, when they are not read to the end."""

    schema: pa.Schema
    num_rows: int
    overflow: bool
    batches: Iterator[pa.RecordBatch]
    close: Callable[[], None] = field(default=lambda: None)
    table: pa.Table | None = None
    """The whole result, when it is known whole (the query engine's): writers may take it at once."""

    @classmethod
    def of_table(cls, table: pa.Table, overflow: bool = False) -> ResultStream:
        """A whole table as a stream (the query engine's results)."""
        return cls(table.schema, table.num_rows, overflow, iter(table.to_batches()), table=table)

    def read_all(self) -> pa.Table:
        """The whole result as one table (formats that need every row first, e.g. FITS column widths)."""
        try:
            return pa.Table.from_batches(list(self.batches), schema=self.schema)
        finally:
            self.close()

    def map(self, transform: Callable[[pa.Table], pa.Table]) -> ResultStream:
        """The stream with `transform` applied to every batch (it must keep the schema it gives an empty
        table)."""
        schema = transform(self.schema.empty_table()).schema

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in self.batches:
                yield from transform(pa.Table.from_batches([batch])).cast(schema).to_batches()

        return ResultStream(schema, self.num_rows, self.overflow, batches(), self.close)

    def has_lists(self) -> bool:
        return any(pa.types.is_list(f.type) or pa.types.is_large_list(f.type) for f in self.schema)


def stream_query(executor: Any, query: str, **options: Any) -> ResultStream:
    """Run `query` through `executor`: its ``stream`` if it has one, else its ``execute`` (a whole table)."""
    stream: Callable[..., ResultStream] | None = getattr(executor, "stream", None)
    if stream is not None:
        return stream(query, **options)
    result = executor.execute(query, **options)
    return ResultStream.of_table(result.table, result.overflow)


def rebatched(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The batches as tables of exactly `rows` rows (the last may be shorter), for writers that render a
    fixed number of rows at a time. If the source fails, the rows it gave are yielded before the error."""
    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        for batch in batches:
            pending.append(batch)
            held += batch.num_rows
            while held >= rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, rows)
                rest = table.slice(rows)
                pending, held = rest.to_batches(), rest.num_rows
    except Exception:
        if held:  # the rows read before the source failed are still written, then the failure
            yield pa.Table.from_batches(pending)
        raise
    if held:
        yield pa.Table.from_batches(pending)
