"""A filter's AST (see ``stepstore.filterlang``) compiled to parameterised SQL.

The SQL is a boolean expression over the runs table aliased ``r``; it reads ``run_params``,
``run_tags`` and rank 0's rows of ``series``, and passes every value, param path, summary
key and tag as a parameter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgumentError
from ..filterlang import (
    MAX_OPERATORS,
    And,
    Column,
    Compare,
    Expr,
    Field,
    HasTag,
    InList,
    Not,
    Or,
    Param,
    SummaryStat,
    Value,
    count_operators,
    parse,
    unix_seconds,
)

__all__ = ["SQLITE", "FilterDialect", "compile_filter", "status_sql"]


def status_sql(stale_after: float) -> str:
    """SQL for the status of the run aliased ``r`` as readers see it: a ``running`` run
    without a heartbeat for ``stale_after`` seconds is ``crashed``."""
    cutoff = float(time.time() - stale_after)
    return (
        "(CASE WHEN r.status = 'running' AND COALESCE(r.heartbeat, r.created) < "
        f"{cutoff!r} THEN 'crashed' ELSE r.status END)"
    )


@dataclass(frozen=True)
class FilterDialect:
    """How a backend's SQL spells what a compiled filter needs.

    Attributes:
        param: The parameter placeholder (``"?"`` for sqlite3, ``"%s"`` for psycopg and
            MySQL drivers; the compiled SQL holds no other ``%``).
        status_sql: An SQL expression giving the status of the run aliased ``r``, e.g. a
            ``CASE`` that shows a stale running run as ``'crashed'``. It must hold no
            placeholders.
    """

    param: str = "?"
    status_sql: str = "r.status"


#: The dialect of the embedded SQLite store.
SQLITE = FilterDialect()

_SQL_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_COLUMN_SQL = {"name": "r.name", "project": "r.project", "id": "r.id", "created": "r.created"}


def compile_filter(
    text_or_expr: str | Expr, dialect: FilterDialect = SQLITE
) -> tuple[str, list[object]]:
    """Compile a filter to an SQL boolean expression over the runs table aliased ``r``.

    The result goes in ``SELECT ... FROM runs r WHERE <sql>``. Every value, param path,
    summary key and tag is passed as a parameter.

    Args:
        text_or_expr: Filter text (see :func:`parse`) or an already parsed AST.
        dialect: The placeholder and status expression of the target database.

    Returns:
        The SQL fragment and its parameters, in placeholder order.

    Raises:
        FilterSyntaxError: The text does not parse.
        InvalidArgumentError: ``text_or_expr`` is neither text nor an AST, or an AST with
            more than 100 and/or/not operators.
    """
    if isinstance(text_or_expr, str):
        expr = parse(text_or_expr)
    elif isinstance(text_or_expr, Compare | InList | HasTag | Not | And | Or):
        expr = text_or_expr
        if count_operators(expr) > MAX_OPERATORS:
            raise InvalidArgumentError(f"the filter has more than {MAX_OPERATORS} operators")
    else:
        raise InvalidArgumentError(f"a filter is a string or an Expr, not {text_or_expr!r}")
    compiler = _Compiler(dialect)
    return compiler.expr(expr), compiler.params


class _Compiler:
    """Accumulates the parameters of one compilation."""

    def __init__(self, dialect: FilterDialect) -> None:
        self.dialect = dialect
        self.params: list[object] = []
        self._aliases = 0

    def expr(self, expr: Expr) -> str:
        """SQL for ``expr``; the result is parenthesised or an EXISTS, and never NULL."""
        match expr:
            case And(left, right):
                return f"({self.expr(left)} AND {self.expr(right)})"
            case Or(left, right):
                return f"({self.expr(left)} OR {self.expr(right)})"
            case Not(operand):
                return f"(NOT {self.expr(operand)})"
            case HasTag(tag):
                alias = self._alias("t")
                return (
                    f"EXISTS (SELECT 1 FROM run_tags {alias} WHERE {alias}.run_id = r.id"
                    f" AND {alias}.tag = {self._param(tag)})"
                )
            case Compare(field, op, value):
                return self._field_test(field, op, [value])
            case InList(field, values, negated):
                return self._field_test(field, "not in" if negated else "in", list(values))
        raise InvalidArgumentError(f"not a filter expression: {expr!r}")

    def _field_test(self, field: Field, op: str, values: list[Value]) -> str:
        """SQL testing ``field`` against ``values`` with a comparison op, "in" or "not in"."""
        match field:
            case Column(name="status"):
                return self._test(f"({self.dialect.status_sql})", op, values)
            case Column(name="created"):
                seconds = [unix_seconds(v) if isinstance(v, str) else v for v in values]
                return self._test(_COLUMN_SQL["created"], op, seconds)
            case Column(name=name):
                return self._test(_COLUMN_SQL[name], op, values)
            case SummaryStat(key, stat):
                alias = self._alias("s")
                return (
                    f"EXISTS (SELECT 1 FROM series {alias} WHERE {alias}.run_id = r.id"
                    f" AND {alias}.rank = 0 AND {alias}.key = {self._param(key)}"
                    f" AND {self._test(f'{alias}.{stat}', op, values)})"
                )
            case Param(path):
                alias = self._alias("p")
                return (
                    f"EXISTS (SELECT 1 FROM run_params {alias} WHERE {alias}.run_id = r.id"
                    f" AND {alias}.path = {self._param(path)}"
                    f" AND {self._param_test(alias, op, values)})"
                )
        raise InvalidArgumentError(f"not a field: {field!r}")

    def _param_test(self, alias: str, op: str, values: list[Value]) -> str:
        """SQL testing the run_params row ``alias`` against ``values``."""
        if values == [None]:
            both_null = f"({alias}.num IS NULL AND {alias}.str IS NULL)"
            return both_null if op == "=" else f"(NOT {both_null})"
        numbers = [v for v in values if not isinstance(v, str)]
        strings = [v for v in values if isinstance(v, str)]
        tests = [
            self._test(f"{alias}.{column}", op, group)
            for column, group in (("num", numbers), ("str", strings))
            if group
        ]
        joiner = " AND " if op in ("!=", "not in") else " OR "
        return tests[0] if len(tests) == 1 else f"({joiner.join(tests)})"

    def _test(self, sql: str, op: str, values: Sequence[Value]) -> str:
        """A never-NULL test of ``sql`` against ``values`` ("!=" and "not in" accept NULL)."""
        placeholders = ", ".join(self._param(value) for value in values)
        if op == "in":
            return f"({sql} IS NOT NULL AND {sql} IN ({placeholders}))"
        if op == "not in":
            return f"({sql} IS NULL OR {sql} NOT IN ({placeholders}))"
        if op == "!=":
            return f"({sql} IS NULL OR {sql} <> {placeholders})"
        return f"({sql} IS NOT NULL AND {sql} {_SQL_OPERATORS[op]} {placeholders})"

    def _param(self, value: Value) -> str:
        """Record ``value`` (booleans as 1/0) as the next parameter; return its placeholder."""
        self.params.append(int(value) if isinstance(value, bool) else value)
        return self.dialect.param

    def _alias(self, kind: str) -> str:
        """A fresh table alias for a subquery."""
        self._aliases += 1
        return f"f{kind}{self._aliases}"
