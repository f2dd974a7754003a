"""DiaSource and DiaForcedSource ids: unique per (visit, detector, index) and within a signed 64-bit integer.

Rubin exposure ids are day_obs * 100000 + seq_num (13 digits), too long to multiply by a detector and
index range in 63 bits, so the visit is packed first: days since 2020-01-01 times 100000 plus the sequence
number (under 10**9 until 2047). Small visit numbers (tests, under 10**9) are used as they are. Then
id = packed_visit * 10**9 + detector * 10**6 + index (205 detectors; up to a million sources each).
"""

from __future__ import annotations

import datetime

SEQ_PER_DAY = 100_000
EPOCH = datetime.date(2020, 1, 1)
MAX_INDEX = 1_000_000
MAX_DETECTOR = 999


def packed_visit(visit: int) -> int:
    if 0 <= visit < 10**9:
        return visit
    day_obs, seq = divmod(int(visit), SEQ_PER_DAY)
    try:
        day = datetime.date(day_obs // 10000, day_obs // 100 % 100, day_obs % 100)
    except ValueError:
        raise ValueError(f"visit {visit} is not a Rubin exposure id (day_obs * 100000 + seq_num)") from None
    packed = (day - EPOCH).days * SEQ_PER_DAY + seq
    if not 0 <= packed < 10**9:
        raise ValueError(f"visit {visit}: observing day {day} is outside 2020-01-01 .. 2047-05-18")
    return packed


def dia_source_id(visit: int, detector: int, index: int) -> int:
    """The id of the `index`-th source of a visit's detector."""
    if not 0 <= detector <= MAX_DETECTOR or not 0 <= index < MAX_INDEX:
        raise ValueError(
            f"detector {detector} / index {index} outside 0..{MAX_DETECTOR} / 0..{MAX_INDEX - 1}"
        )
    return packed_visit(visit) * 10**9 + detector * 10**6 + index
