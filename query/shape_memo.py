"""What a query's shape alone decides, remembered: the tables it names, where they are answered, the
metadata of its result columns.

Two queries of one shape (dms.query.shape) differ only in their literals, so whatever is read from the
identifiers of the query (which tables it names, hence the visibility check and the routing) is the same
for both, and a service need not parse the second one to know it. That holds only where no literal is
read as a name: :func:`names_spelled_out` checks, on the parse of the first query, that every table name
is an identifier of the text outside every literal, and a shape that fails the check is not remembered.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from sqlglot import exp

from dms.query.shape import Shape

MEMO_SIZE = 1024
"""Shapes a memo keeps (the least recently used go first)."""

V = TypeVar("V")


class ShapeMemo(Generic[V]):
    """A thread-safe LRU map of keys (a shape's key and what else the value depends on) to values, all
    of one generation (of the registry, or of TAP_SCHEMA): a new generation empties it."""

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._generation: Hashable = None
        self._lock = threading.Lock()

    def get(self, key: Hashable, generation: Hashable) -> V | None:
        with self._lock:
            if generation != self._generation:
                self._values.clear()
                self._generation = generation
                return None
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key: Hashable, generation: Hashable, value: V) -> None:
        with self._lock:
            if generation != self._generation:
                self._values.clear()
                self._generation = generation
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


def names_spelled_out(text: str, shape: Shape, tree: exp.Expr) -> bool:
    """Whether every table `tree` (the parse of `text`) names is spelled by identifiers of the text that
    lie outside its literals, so that every query of this shape names the same tables."""
    spans = [(literal.start, literal.end) for literal in shape.literals]
    for table in tree.find_all(exp.Table):
        for part in ("this", "db", "catalog"):
            identifier = table.args.get(part)
            if identifier is None:
                continue
            if not isinstance(identifier, exp.Identifier):
                return False  # a table function, a placeholder, ...
            start, end = identifier.meta.get("start"), identifier.meta.get("end")
            if start is None or end is None:
                return False
            if any(start < stop and begin <= end for begin, stop in spans):
                return False
            if text[start : end + 1].strip('"`').lower() != identifier.name.lower():
                return False
    return True
