"""Hypothesis profiles: a quarter of each property suite's examples in the normal run, all of them under
`-m slow`.

tests/conftest.py registers the profiles and loads one before the test modules are imported: "dms-full"
(the full counts) when the run selects the slow suites (`pytest -m slow`, which .ci/run runs after the normal
run) or DMS_HYPOTHESIS_PROFILE=dms-full, "dms-normal" otherwise. Under "dms-full" every property test also
carries the `slow` marker, so that `-m slow` runs them all again at their full count. A suite that sets its
own count writes `max_examples=examples(N)`, N being its full count.
"""

from __future__ import annotations

from hypothesis import settings

FULL = "dms-full"
NORMAL = "dms-normal"
FULL_EXAMPLES = 100  # hypothesis's default
NORMAL_EXAMPLES = 25
MIN_EXAMPLES = 5  # a normal run still tries this many, however small the suite's full count


def register() -> None:
    settings.register_profile(FULL, max_examples=FULL_EXAMPLES)
    settings.register_profile(NORMAL, max_examples=NORMAL_EXAMPLES)


def examples(full: int) -> int:
    """The example count of a suite whose full count is `full`, in the loaded profile's proportion."""
    loaded = settings.default
    share = (loaded.max_examples if loaded is not None else FULL_EXAMPLES) / FULL_EXAMPLES
    return full if share >= 1 else max(MIN_EXAMPLES, round(full * share))
