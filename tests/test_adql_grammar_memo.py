"""The memo of the ADQL 2.1 grammar check: accepted texts are remembered, refusals never are (issue 16)."""

from __future__ import annotations

import pytest

from dms.query.adql import AdqlSyntaxError, grammar, parse


def test_a_refused_query_is_refused_every_time_with_the_same_position() -> None:
    bad = "SELECT TOP 5 id FROM survey.obj WHERE"
    errors = []
    for _ in range(3):
        with pytest.raises(AdqlSyntaxError) as caught:
            grammar.check_once(bad)
        errors.append((caught.value.message, caught.value.line, caught.value.column))
    with pytest.raises(AdqlSyntaxError) as direct:
        grammar.check(bad)
    assert errors == [(direct.value.message, direct.value.line, direct.value.column)] * 3


def test_an_accepted_query_is_checked_once_and_parses_the_same() -> None:
    text = "SELECT TOP 3 id, ra FROM survey.obj WHERE mag < 20.125 ORDER BY id"
    grammar._accepted.cache_clear()
    first = parse(text).sql()
    second = parse(text).sql()
    info = grammar._accepted.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert first == second


def test_long_texts_are_not_remembered() -> None:
    text = "SELECT id FROM survey.obj WHERE " + " OR ".join(f"id = {i}" for i in range(2000))
    assert len(text) > grammar.MEMO_MAX_CHARS
    grammar._accepted.cache_clear()
    grammar.check_once(text)
    assert grammar._accepted.cache_info().currsize == 0
