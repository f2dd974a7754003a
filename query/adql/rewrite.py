"""A top-down rewrite that also rewrites inside the nodes it produces.

sqlglot's `Expression.transform` does not descend into a replacement node, so a lowering that consumes
its arguments (CONTAINS(POINT(...), ...)) would leave functions nested in those arguments untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp


def rewrite(tree: exp.Expression, rule: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
    """Apply `rule` to every node top-down, including the inside of every node `rule` returns."""

    def apply(node: exp.Expression) -> exp.Expression:
        new = rule(node)
        if new is not node:
            for child in list(new.iter_expressions()):
                child.replace(rewrite(child, rule))
        return new

    return tree.transform(apply, copy=False)
