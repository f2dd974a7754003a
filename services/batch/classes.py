"""Priority classes of the batch service, in the seed's order, and their worker quotas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dms.errors import ConfigError

#: Highest priority first: prompt > offline > OCS-driven batch > DAC > CPP > DRP.
PRIORITY_CLASSES: tuple[str, ...] = ("prompt", "offline", "ocs", "dac", "cpp", "drp")
PriorityClass = Literal["prompt", "offline", "ocs", "dac", "cpp", "drp"]


def rank(priority_class: str) -> int:
    """0 for prompt ... 5 for drp; a ConfigError listing the classes otherwise."""
    try:
        return PRIORITY_CLASSES.index(priority_class)
    except ValueError:
        raise ConfigError(
            f"unknown priority class {priority_class!r}; allowed: {', '.join(PRIORITY_CLASSES)}"
        ) from None


@dataclass(frozen=True)
class Quota:
    """Workers of one class: `reserved` are kept for it (other classes cannot take them, so its tasks start
    at once); at most `maximum` run at once (None: no cap)."""

    reserved: int = 0
    maximum: int | None = None


def allowance(cls: str, slots: int, running: dict[str, int], quotas: dict[str, Quota]) -> int:
    """How many more tasks of class `cls` may start now on `slots` workers, `running` counting what runs
    (or was just claimed) per class: free workers except those other classes reserve and do not use, and
    never beyond the class's maximum. Pure, so the quota rules are testable without a cluster."""
    free = slots - sum(running.values())
    held = sum(
        max(0, quotas.get(other, Quota()).reserved - running.get(other, 0))
        for other in PRIORITY_CLASSES
        if other != cls
    )
    cap = free - held
    maximum = quotas.get(cls, Quota()).maximum
    if maximum is not None:
        cap = min(cap, maximum - running.get(cls, 0))
    return max(0, cap)
