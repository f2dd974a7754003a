"""Known header errors of Rubin raws, corrected by rules shipped as data (header_corrections.yaml).

Rubin's translators fix headers the cameras got wrong for a while (a rotator angle off by 90 degrees, a
filter name misreported, angles in radians). DMS keeps those facts as data, one rule per instrument, range
of observing days, sequence numbers or start times, and header key, so adding a correction is a data change
reviewed like any other, not a code branch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from astropy.time import Time

CORRECTIONS_FILE = Path(__file__).with_name("header_corrections.yaml")
OPERATIONS = ("add", "scale", "set", "unset")


@dataclass(frozen=True)
class Correction:
    """One rule: where it applies (instrument, day_obs/seq_num/start-time ranges, value) and what it does."""

    instrument: str
    key: str
    operation: str
    value: Any
    reason: str
    day_obs: tuple[int, int] | None = None
    seq_num: tuple[int, int] | None = None
    begin_before: Time | None = None
    begin_after: Time | None = None
    when: Any = None
    wrap_at: float | None = None

    def applies(self, instrument: str, day_obs: int | None, seq_num: int | None, begin: Time | None) -> bool:
        if instrument != self.instrument:
            return False
        if self.day_obs and (day_obs is None or not self.day_obs[0] <= day_obs <= self.day_obs[1]):
            return False
        if self.seq_num and (seq_num is None or not self.seq_num[0] <= seq_num <= self.seq_num[1]):
            return False
        if self.begin_before is not None and (begin is None or not begin < self.begin_before):
            return False
        return not (self.begin_after is not None and (begin is None or not begin >= self.begin_after))

    def corrected(self, current: Any) -> tuple[bool, Any]:
        """(changed, new value) for the key's current value (None when absent)."""
        if current is None or (self.when is not None and current != self.when):
            return False, current
        if self.operation == "unset":
            return True, None
        if self.operation == "set":
            return True, self.value
        if not isinstance(current, int | float) or isinstance(current, bool):
            return False, current
        value = current + self.value if self.operation == "add" else current * self.value
        if self.wrap_at is not None:
            value = (value - (self.wrap_at - 360.0)) % 360.0 + (self.wrap_at - 360.0)
        return True, float(value)


def _range(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise ValueError(f"{CORRECTIONS_FILE.name}: {name} must be [first, last] integers, got {value!r}")
    return int(value[0]), int(value[1])


def _rule(entry: dict[str, Any]) -> Correction:
    operations = [op for op in OPERATIONS if op in entry]
    if len(operations) != 1 or "instrument" not in entry or "key" not in entry or "reason" not in entry:
        raise ValueError(
            f"{CORRECTIONS_FILE.name}: each correction needs instrument, key, reason and exactly one of "
            f"{', '.join(OPERATIONS)}; got {sorted(entry)}"
        )
    before, after = entry.get("begin_before"), entry.get("begin_after")
    return Correction(
        instrument=str(entry["instrument"]),
        key=str(entry["key"]),
        operation=operations[0],
        value=entry[operations[0]],
        reason=str(entry["reason"]),
        day_obs=_range(entry.get("day_obs"), "day_obs"),
        seq_num=_range(entry.get("seq_num"), "seq_num"),
        begin_before=None if before is None else Time(str(before), scale="tai"),
        begin_after=None if after is None else Time(str(after), scale="tai"),
        when=entry.get("when"),
        wrap_at=entry.get("wrap_at"),
    )


@functools.cache
def corrections() -> tuple[Correction, ...]:
    """The shipped correction rules (read once)."""
    document = yaml.safe_load(CORRECTIONS_FILE.read_text())
    return tuple(_rule(entry) for entry in document.get("corrections", []))


def correct(
    get: Any, instrument: str, day_obs: int | None, seq_num: int | None, begin: Time | None
) -> tuple[dict[str, Any], list[str]]:
    """Overrides for the header keys the rules correct (None meaning 'absent'), and why, for one raw.

    `get(key)` returns a header value; rules apply in file order, each seeing the previous ones' results."""
    overrides: dict[str, Any] = {}
    notes: list[str] = []
    for rule in corrections():
        if not rule.applies(instrument, day_obs, seq_num, begin):
            continue
        current = overrides[rule.key] if rule.key in overrides else get(rule.key)
        changed, value = rule.corrected(current)
        if changed:
            overrides[rule.key] = value
            notes.append(f"{rule.key} {current!r} -> {value!r}: {rule.reason}")
    return overrides, notes
