"""Tests for the run filter language: parsing, error messages and SQL run on SQLite."""

from __future__ import annotations

import json
import operator
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepstore.backends.filter_sql import SQLITE, compile_filter
from stepstore.backends.filter_sql import FilterDialect as Dialect
from stepstore.errors import FilterSyntaxError, InvalidArgumentError
from stepstore.filterlang import (
    STATS,
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
    parse,
)

# ----------------------------------------------------------------------------- fixture


def _ts(text: str) -> float:
    """Unix seconds of an ISO-8601 date or datetime, naive meaning UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class Run:
    """A run of the fixture store, as the reference evaluator sees it."""

    id: str
    project: str
    name: str
    status: str
    created: float
    params: dict[str, Any] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    #: key -> (count, min, max, last)
    series: dict[str, tuple[int, float | None, float | None, float | None]] = field(
        default_factory=dict
    )


RUNS = [
    Run(
        "r1",
        "vision",
        "baseline",
        "finished",
        _ts("2026-01-10"),
        {
            "lr": 0.1,
            "model": {"width": 64, "act": "relu"},
            "use_bn": True,
            "opt": "adam",
            "layers": [1, 2],
            "seed": 1,
        },
        {"baseline", "gpu"},
        {
            "train/loss": (100, 0.1, 2.0, 0.2),
            "val/acc": (10, 0.5, 0.9, 0.85),
            "train.loss": (5, 1.0, 3.0, 1.5),
        },
    ),
    Run(
        "r2",
        "vision",
        "wide",
        "running",
        _ts("2026-06-01T08:30:00"),
        {
            "lr": 0.01,
            "model": {"width": 256, "act": "gelu"},
            "use_bn": False,
            "opt": "sgd",
            "seed": 2,
            "note": None,
        },
        {"gpu"},
        {"train/loss": (200, 0.05, 1.5, 0.05), "val/acc": (20, 0.6, 0.95, 0.95)},
    ),
    Run(
        "r3",
        "nlp",
        'o\'brien "q"',
        "crashed",
        _ts("2026-11-15T12:00:00"),
        {"lr": 0.001, "model": {"width": "64"}, "opt": "adam", "seed": -3, "a-b": {"c_d": 5}},
        {"x y", "baseline"},
        {"val loss": (3, 0.7, 0.9, 0.8), "empty": (0, None, None, None)},
    ),
    Run("r4", "nlp", "empty", "failed", _ts("2027-01-01")),
    Run(
        "r5",
        "vision",
        "baseline",
        "finished",
        1e9,
        {"lr": 0.0001, "weird": "ünï'code", "opt": 3},
        {"ü"},
        {"val/acc": (1, 0.1, 0.1, 0.1)},
    ),
]
ALL = {run.id for run in RUNS}


def flatten(params: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Rows ``(path, num, str)`` of the run_params table for nested ``params``."""
    for key, value in params.items():
        path = prefix + key
        if isinstance(value, dict):
            yield from flatten(value, path + ".")
        elif isinstance(value, bool | int | float):
            yield path, float(value), None
        elif isinstance(value, str):
            yield path, None, value
        elif value is None:
            yield path, None, None
        else:
            yield path, None, json.dumps(value)


SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, project TEXT, name TEXT, status TEXT, created REAL);
CREATE TABLE run_params (run_id TEXT, path TEXT, num REAL, str TEXT);
CREATE TABLE run_tags (run_id TEXT, tag TEXT);
CREATE TABLE series (
    id INTEGER PRIMARY KEY, run_id TEXT, key TEXT, "rank" INTEGER NOT NULL DEFAULT 0,
    count INTEGER, min REAL, max REAL, last REAL
);
"""


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.executescript(SCHEMA)
    for run in RUNS:
        connection.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
            (run.id, run.project, run.name, run.status, run.created),
        )
        for path, num, text in flatten(run.params):
            connection.execute(
                "INSERT INTO run_params VALUES (?, ?, ?, ?)", (run.id, path, num, text)
            )
        for tag in run.tags:
            connection.execute("INSERT INTO run_tags VALUES (?, ?)", (run.id, tag))
        for key, stats in run.series.items():
            connection.execute(
                "INSERT INTO series (run_id, key, count, min, max, last) VALUES (?, ?, ?, ?, ?, ?)",
                (run.id, key, *stats),
            )
    yield connection
    connection.close()


def select(db: sqlite3.Connection, text_or_expr: str | Expr, dialect: Dialect = SQLITE) -> set[str]:
    """Ids of the fixture runs the filter selects."""
    sql, params = compile_filter(text_or_expr, dialect)
    return {row[0] for row in db.execute(f"SELECT r.id FROM runs r WHERE {sql}", params)}


def assert_store_intact(db: sqlite3.Connection) -> None:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"runs", "run_params", "run_tags", "series"}
    assert db.execute("SELECT count(*) FROM runs").fetchone() == (len(RUNS),)


# ----------------------------------------------------------------------- selections


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # params: numbers, nesting, strings, bools, null, missing
        ("params.lr < 0.01", {"r3", "r5"}),
        ("params.lr <= 0.01", {"r2", "r3", "r5"}),
        ("params.lr > 0.01", {"r1"}),
        ("params.lr >= 1e-2", {"r1", "r2"}),
        ("params.lr = 0.1", {"r1"}),
        ("params.lr == 0.1", {"r1"}),
        ("params.lr != 0.1", {"r2", "r3", "r5"}),
        ("params.lr <> 0.1", {"r2", "r3", "r5"}),
        ("params.model.width = 64", {"r1"}),
        ("params.model.width = '64'", {"r3"}),
        ("params.model.width > 100", {"r2"}),
        ("params.model.width != 64", {"r2", "r3"}),
        ("params.model.act = 'relu'", {"r1"}),
        ("params.model.act >= 'g'", {"r1", "r2"}),
        ("params.opt = 'adam'", {"r1", "r3"}),
        ('params.opt = "adam"', {"r1", "r3"}),
        ("params.opt != 'adam'", {"r2", "r5"}),
        ("params.opt < 'b'", {"r1", "r3"}),
        ("params.opt = 3", {"r5"}),
        ("params.use_bn = true", {"r1"}),
        ("params.use_bn = FALSE", {"r2"}),
        ("params.use_bn != true", {"r2"}),
        ("params.use_bn = 1", {"r1"}),
        ("params.note = null", {"r2"}),
        ("params.note != null", set()),
        ("params.seed != null", {"r1", "r2", "r3"}),
        ("params.seed = -3", {"r3"}),
        ("params.a-b.c_d = 5", {"r3"}),
        ("params.layers = '[1, 2]'", {"r1"}),
        ("params.weird = 'ünï\\'code'", {"r5"}),
        ("params.missing = 1", set()),
        ("params.missing != 1", set()),
        ("not params.missing = 1", ALL),
        ("not (params.lr = 0.1)", {"r2", "r3", "r4", "r5"}),
        # summaries: every stat, keys with '/', '.', spaces
        ("summary.train/loss.last < 0.1", {"r2"}),
        ("summary.train/loss.min <= 0.1", {"r1", "r2"}),
        ("summary.train/loss.max = 2", {"r1"}),
        ("summary.train/loss.count >= 100", {"r1", "r2"}),
        ("summary.val/acc.max > 0.9", {"r2"}),
        ("summary.val/acc.last != 0.95", {"r1", "r5"}),
        ("summary.train.loss.last = 1.5", {"r1"}),
        ("summary['val loss'].last = 0.8", {"r3"}),
        ('summary["val/acc"].count = 1', {"r5"}),
        ("summary.empty.count = 0", {"r3"}),
        ("summary.empty.last < 1", set()),
        ("summary.empty.last != 1", {"r3"}),
        ("summary.nope.last < 1", set()),
        # tags
        ("'baseline' in tags", {"r1", "r3"}),
        ("'x y' IN tags", {"r3"}),
        ("'ü' in tags", {"r5"}),
        ("tags = 'gpu'", {"r1", "r2"}),
        ("'gpu' = tags", {"r1", "r2"}),
        ("tags != 'gpu'", {"r3", "r4", "r5"}),
        ("'gpu' not in tags", {"r3", "r4", "r5"}),
        ("not 'gpu' in tags", {"r3", "r4", "r5"}),
        ("'nope' in tags", set()),
        # columns
        ("status = 'finished'", {"r1", "r5"}),
        ("status != 'finished'", {"r2", "r3", "r4"}),
        ("name = 'baseline'", {"r1", "r5"}),
        ("name = 'o\\'brien \"q\"'", {"r3"}),
        ('name = "o\'brien \\"q\\""', {"r3"}),
        ("name > 'p'", {"r2"}),
        ("project = 'nlp'", {"r3", "r4"}),
        ("id = 'r4'", {"r4"}),
        ("id <= 'r2'", {"r1", "r2"}),
        ("created > '2026-11-01'", {"r3", "r4"}),
        ("created >= '2026-11-15T12:00:00'", {"r3", "r4"}),
        ("created > '2026-11-15T12:00:00Z'", {"r4"}),
        ("created < '2026-11-15T13:00:00+02:00'", {"r1", "r2", "r5"}),
        ("created < '2026-11-15T14:00:00+02:00'", {"r1", "r2", "r5"}),
        ("created <= '2026-11-15T14:00:00+02:00'", {"r1", "r2", "r3", "r5"}),
        ("created < 1000000001", {"r5"}),
        ("created = 1e9", {"r5"}),
        ("created in ('2026-01-10', 1e9)", {"r1", "r5"}),
        # value first
        ("0.01 < params.lr", {"r1"}),
        ("'finished' = status", {"r1", "r5"}),
        ("2 >= summary.val/acc.count", {"r5"}),
        # in lists
        ("status in ('running', 'crashed')", {"r2", "r3"}),
        ("status not in ('running', 'crashed')", {"r1", "r4", "r5"}),
        ("params.opt in ('adam', 'sgd', 3)", {"r1", "r2", "r3", "r5"}),
        ("params.opt in ('sgd', 3)", {"r2", "r5"}),
        ("params.opt not in ('adam')", {"r2", "r5"}),
        ("params.opt not in ('sgd', 3)", {"r1", "r3"}),
        ("params.model.width in (64)", {"r1"}),
        ("params.model.width in (64, '64')", {"r1", "r3"}),
        ("params.use_bn in (true)", {"r1"}),
        ("params.seed not in (1, 2)", {"r3"}),
        ("params.note not in (1)", {"r2"}),
        ("summary.val/acc.count in (1, 20)", {"r2", "r5"}),
        ("summary.val/acc.count not in (1, 20)", {"r1"}),
        ("name in ('wide', 'empty')", {"r2", "r4"}),
        ("id not in ('r1')", {"r2", "r3", "r4", "r5"}),
        # precedence and grouping
        ("status = 'finished' or status = 'running' and project = 'nlp'", {"r1", "r5"}),
        ("(status = 'finished' or status = 'running') and project = 'vision'", {"r1", "r2", "r5"}),
        ("not status = 'finished' and project = 'vision'", {"r2"}),
        ("not (status = 'finished' and project = 'vision')", {"r2", "r3", "r4"}),
        ("not not 'gpu' in tags", {"r1", "r2"}),
        ("'gpu' in tags and not 'baseline' in tags or id = 'r4'", {"r2", "r4"}),
        ("id = 'r1' or id = 'r2' or id = 'r3' and id = 'r3'", {"r1", "r2", "r3"}),
        ("((((id = 'r1'))))", {"r1"}),
        # keywords in any case, whitespace of any kind
        ("Not status = 'failed'\n\tAND params.use_bn = True", {"r1"}),
        ("status='failed'or(id='r1')", {"r1", "r4"}),
    ],
)
def test_filter_selects_expected_runs(
    db: sqlite3.Connection, text: str, expected: set[str]
) -> None:
    assert select(db, text) == expected
    assert {run.id for run in RUNS if evaluate(parse(text), run)} == expected


# ---------------------------------------------------------------------------- the AST

X1 = Compare(Param("x"), "=", 1)
Y2 = Compare(Param("y"), "=", 2)
Z3 = Compare(Param("z"), "=", 3)


@pytest.mark.parametrize(
    ("text", "ast"),
    [
        ("params.x = 1 or params.y = 2 and params.z = 3", Or(X1, And(Y2, Z3))),
        ("params.x = 1 and params.y = 2 or params.z = 3", Or(And(X1, Y2), Z3)),
        ("params.x = 1 and (params.y = 2 or params.z = 3)", And(X1, Or(Y2, Z3))),
        ("params.x = 1 and params.y = 2 and params.z = 3", And(And(X1, Y2), Z3)),
        ("params.x = 1 or params.y = 2 or params.z = 3", Or(Or(X1, Y2), Z3)),
        ("not params.x = 1 and params.y = 2", And(Not(X1), Y2)),
        ("not (params.x = 1 and params.y = 2)", Not(And(X1, Y2))),
        ("not not params.x = 1", Not(Not(X1))),
        ("1 = params.x", X1),
        ("1 < params.x", Compare(Param("x"), ">", 1)),
        ("1 >= params.x", Compare(Param("x"), "<=", 1)),
        ("params.x == 1", X1),
        ("params.x <> 1", Compare(Param("x"), "!=", 1)),
        ("params.x = 1.0", Compare(Param("x"), "=", 1.0)),
        ("params.x = -2.5e-3", Compare(Param("x"), "=", -0.0025)),
        ("params.x = .5", Compare(Param("x"), "=", 0.5)),
        ("params.x = 'it\\'s \\\\'", Compare(Param("x"), "=", "it's \\")),
        ('params.x = "say \\"hi\\""', Compare(Param("x"), "=", 'say "hi"')),
        ("params.x = null", Compare(Param("x"), "=", None)),
        ("params.in.and = TRUE", Compare(Param("in.and"), "=", True)),
        ("summary.train.loss.last < 1", Compare(SummaryStat("train.loss", "last"), "<", 1)),
        ("summary.val/acc.max >= 0.9", Compare(SummaryStat("val/acc", "max"), ">=", 0.9)),
        ('summary["val loss"].min = 0', Compare(SummaryStat("val loss", "min"), "=", 0)),
        ("summary['a.b'].count = 0", Compare(SummaryStat("a.b", "count"), "=", 0)),
        ("'x' in tags", HasTag("x")),
        ("tags = 'x'", HasTag("x")),
        ("'x' not in tags", Not(HasTag("x"))),
        ("not 'x' in tags", Not(HasTag("x"))),
        ("tags != 'x'", Not(HasTag("x"))),
        ("status in ('a', 'b')", InList(Column("status"), ("a", "b"))),
        ("params.x not in ('a', 3, true)", InList(Param("x"), ("a", 3, True), negated=True)),
        ("created > '2026-11-01'", Compare(Column("created"), ">", "2026-11-01")),
    ],
)
def test_parse_builds_ast(text: str, ast: Expr) -> None:
    assert parse(text) == ast


def test_ast_is_frozen_and_hashable() -> None:
    ast = parse("params.x = 1 and status in ('a', 'b')")
    assert hash(ast) == hash(parse("params.x = 1 and status in ('a', 'b')"))
    with pytest.raises(AttributeError):
        ast.left = X1  # type: ignore[misc, union-attr]


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "column", "fragments"),
    [
        ("params.x <", 11, ["expected a value after '<'", "found the end"]),
        ("params.x < and", 12, ["expected a value after '<'", "found 'and'"]),
        ("params.x", 9, ["expected a comparison operator, 'in' or 'not in' after 'params.x'"]),
        ("params.x 1", 10, ["expected a comparison operator"]),
        ("params.x not 1", 14, ["expected 'in' after 'not'"]),
        ("params.x = 1 params.y = 2", 14, ["expected 'and', 'or' or the end of the filter"]),
        ("params.a < 1 < 2", 14, ["expected 'and', 'or' or the end", "found '<'"]),
        ("(params.x = 1", 14, ["expected ')' after '1'"]),
        ("params.x = 1)", 13, ["expected the end of the filter", "found ')'"]),
        ("params.x in (1,", 16, ["expected a value after ','"]),
        ("params.x in ()", 14, ["expected a value after '('"]),
        ("params.x in 1", 13, ["expected '(' after 'in'"]),
        ("and params.x = 1", 1, ["expected a field, a value, 'not' or '(' at the start"]),
        ("not", 4, ["expected a field, a value, 'not' or '('"]),
        ("'a' = 'b'", 7, ["expected a field after '='"]),
        ("params.x = 1 and", 17, ["after 'and'", "found the end"]),
        ("params.x ; DROP TABLE runs", 10, ["found ';'"]),
        ("params.x = 'abc", 12, ["unterminated string"]),
        ('params.x = "abc\\"', 12, ["unterminated string"]),
        ("", 1, ["the filter is empty"]),
        ("   ", 4, ["the filter is empty"]),
        ("foo = 1", 1, ["unknown field 'foo'", "params.<path>", "summary.<key>.<stat>", "tags"]),
        ("ID = 'r1'", 1, ["unknown field 'ID'", "status, name, project, id, created"]),
        ("summary.loss.median = 1", 14, ["unknown summary statistic 'median'", "last, min, max"]),
        ("summary['a'].avg = 1", 14, ["unknown summary statistic 'avg'"]),
        ("summary.loss = 1", 1, ["summary.<key>.<stat>", "last, min, max, count"]),
        ("summary..last = 1", 1, ["summary.<key>.<stat>"]),
        ("summary[''].last = 1", 9, ["a summary key cannot be empty"]),
        ("params = 1", 1, ["params.<dotted.path>"]),
        ("params.x. = 1", 1, ["params.<dotted.path>"]),
        ("name['x'].last = 1", 1, ["only summary fields take a quoted key"]),
        ("tags < 3", 6, ["tags only compares with = and !="]),
        ("tags = 3", 8, ["a tag is a string, not 3"]),
        ("tags in ('a')", 1, ["'x' in tags"]),
        ("'a' in params.x", 8, ["only tags can follow 'VALUE in'"]),
        ("name = 3", 8, ["name compares with strings, not 3"]),
        ("status < true", 10, ["status compares with strings, not true"]),
        ("summary.a.last = 'x'", 18, ["summaries compare with numbers, not 'x'"]),
        ("summary.a.last = null", 18, ["summaries compare with numbers, not null"]),
        ("params.x < null", 12, ["null only compares with = and !="]),
        ("params.x > true", 12, ["true only compares with = and !="]),
        ("params.x in (1, null)", 17, ["null cannot be in an 'in' list"]),
        ("name in ('a', 2)", 15, ["name compares with strings, not 2"]),
        ("created > 'yesterday'", 11, ["'yesterday' is not an ISO-8601 date"]),
        ("created > '2026-13-01'", 11, ["'2026-13-01' is not an ISO-8601 date"]),
        ("created in (1, '2026-02-30')", 16, ["'2026-02-30' is not an ISO-8601 date"]),
        ("created = true", 11, ["created compares with a number or an ISO-8601 date"]),
        ("params.x = 'a\\n'", 14, ["unknown escape '\\\\n'"]),
        ("params.x = 1e400", 12, ["number 1e400 is out of range"]),
        ("params.x = 9223372036854775808", 12, ["does not fit in 64 bits"]),
        ("params.x = " + "9" * 5000, 12, ["does not fit in 64 bits"]),
    ],
)
def test_syntax_errors_point_at_the_problem(text: str, column: int, fragments: list[str]) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    message = str(caught.value)
    assert f"column {column}:" in message
    for fragment in fragments:
        assert fragment in message
    lines = message.split("\n")
    assert lines[1] == "  " + text
    assert lines[2] == "  " + " " * (column - 1) + "^"
    assert caught.value.text == text
    assert caught.value.position == column - 1
    assert isinstance(caught.value, ValueError)


def test_error_message_layout() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse("params.lr < and status = 'x'")
    assert str(caught.value) == (
        "invalid filter at column 13: expected a value after '<', found 'and'\n"
        "  params.lr < and status = 'x'\n"
        "              ^"
    )


def test_error_in_multiline_filter_quotes_its_line() -> None:
    text = "status = 'finished'\n\tand params.lr <\n  or id = 'x'"
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    assert str(caught.value) == (
        "invalid filter at line 3, column 3: expected a value after '<', found 'or'\n"
        "    or id = 'x'\n"
        "    ^"
    )
    assert caught.value.position == text.index("or")


def test_error_caret_keeps_tabs() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse("\tparams.x = \tbogus")
    assert str(caught.value).split("\n")[1:] == ["  \tparams.x = \tbogus", "  \t           \t^"]


def test_parse_rejects_non_text() -> None:
    with pytest.raises(InvalidArgumentError):
        parse(b"params.x = 1")  # type: ignore[arg-type]


def test_too_many_operators() -> None:
    assert parse(" or ".join(["params.x = 1"] * 99) + " and not params.x = 1")
    with pytest.raises(FilterSyntaxError, match="more than 100 and/or/not operators"):
        parse(" or ".join(["params.x = 1"] * 102))
    deep: Expr = X1
    for _ in range(101):
        deep = Not(deep)
    with pytest.raises(InvalidArgumentError, match="more than 100"):
        compile_filter(deep)


def test_deep_parentheses_parse(db: sqlite3.Connection) -> None:
    assert select(db, "(" * 500 + "id = 'r1'" + ")" * 500) == {"r1"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Compare(Param("x"), "LIKE", 1), "unknown operator 'LIKE'"),
        (lambda: Compare(Param("x"), "= 1; DROP TABLE runs; --", 1), "unknown operator"),
        (lambda: Column("r.id) OR (1"), "unknown field"),
        (lambda: SummaryStat("loss", "last; DROP TABLE runs"), "unknown summary statistic"),
        (lambda: Param(""), "non-empty"),
        (lambda: Compare(Param("x"), "=", float("nan")), "finite"),
        (lambda: Compare(Param("x"), "=", 2**70), "64 bits"),
        (lambda: Compare(Param("x"), "=", [1]), "params compare with numbers"),  # type: ignore[arg-type]
        (lambda: Compare("x", "=", 1), "not a field"),  # type: ignore[arg-type]
        (lambda: InList(Param("x"), ()), "non-empty"),
        (lambda: HasTag(3), "a tag is a string"),  # type: ignore[arg-type]
    ],
)
def test_invalid_asts_cannot_be_built(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        make()


def test_compile_rejects_other_objects() -> None:
    with pytest.raises(InvalidArgumentError):
        compile_filter(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- SQL safety


@pytest.mark.parametrize(
    "text",
    [
        "name = 'x'' OR 1=1 --'",
        "name = 'x' OR 1=1 --'",
        "name = 'x\\' OR 1=1 --'",
        "params.a; DROP TABLE runs",
        "params.a = 1; DROP TABLE runs",
        "params.a = '1'; DROP TABLE runs; --'",
        "params.a = '1\\'; DROP TABLE runs; --'",
        'name = "\'); DROP TABLE runs; --"',
        'name = \'r1" OR "1"="1\'',
        "params.x' OR '1'='1 = 1",
        "summary['x\\'] OR 1=1 --'].last > 0",
        "summary['loss'] OR 1=1].last > 0",
        "'x'' OR 1=1 --' in tags",
        "id = 'r1' /* comment */",
        "id = 'r1' -- comment",
        "status = 'finished' UNION SELECT name FROM sqlite_master",
        "id = 'r1'\x00 OR 1=1",
        "params.x = 1 OR 1 = 1",
        "id = ?",
        "id = %s",
        "id in (SELECT id FROM runs)",
    ],
)
def test_injection_attempts_are_harmless(db: sqlite3.Connection, text: str) -> None:
    try:
        expr = parse(text)
    except FilterSyntaxError:
        pass
    else:
        sql, _ = compile_filter(expr)
        assert "'" not in sql and '"' not in sql and ";" not in sql and "--" not in sql
        assert select(db, expr) == {run.id for run in RUNS if evaluate(expr, run)}
    assert_store_intact(db)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = 'x\\' OR 1=1 --'", set()),
        ('name = "\'); DROP TABLE runs; --"', set()),
        ("summary['x\\'] OR 1=1 --'].last > 0", set()),
        ("'x\\' OR \\'1\\'=\\'1' in tags", set()),
        ("params.x = '1 OR 1 = 1'", set()),
    ],
)
def test_hostile_strings_are_plain_literals(
    db: sqlite3.Connection, text: str, expected: set[str]
) -> None:
    assert select(db, text) == expected
    assert_store_intact(db)


def test_only_whitelisted_text_reaches_sql() -> None:
    text = (
        "params.secret_path = 'secret-string' and summary['secret key'].max > 12345 "
        "and 'secret-tag' in tags and name in ('secret-name') and created > '2026-11-01'"
    )
    sql, params = compile_filter(text)
    assert params == [
        "secret_path",
        "secret-string",
        "secret key",
        12345,
        "secret-tag",
        "secret-name",
        _ts("2026-11-01"),
    ]
    assert "secret" not in sql and "12345" not in sql and "2026" not in sql
    assert sql.count("?") == len(params)


def test_booleans_are_passed_as_integers() -> None:
    _, params = compile_filter("params.a = true and params.b != false and params.c in (true, 2)")
    assert params == ["a", 1, "b", 0, "c", 1, 2]
    assert all(type(value) is not bool for value in params)


def test_subquery_aliases_are_unique() -> None:
    sql, _ = compile_filter(
        "params.a = 1 and params.b = 2 and summary.x.last > 0 and summary.y.min < 0 "
        "and 'a' in tags and 'b' in tags"
    )
    aliases = re.findall(r"FROM \w+ (\w+) WHERE", sql)
    assert len(aliases) == 6 == len(set(aliases))


def test_dialect_placeholder_and_status_expression(db: sqlite3.Connection) -> None:
    sql, params = compile_filter("status = 'crashed' and params.lr < 1", Dialect(param="%s"))
    assert "?" not in sql and sql.count("%s") == len(params) == 3
    stale = Dialect(
        status_sql="CASE WHEN r.status = 'running' AND r.created < 1e10 THEN 'crashed' "
        "ELSE r.status END"
    )
    assert select(db, "status = 'crashed'", stale) == {"r2", "r3"}
    assert select(db, "status in ('running')", stale) == set()
    assert select(db, "status != 'crashed'", stale) == {"r1", "r4", "r5"}
    assert select(db, "status = 'crashed'") == {"r3"}


def test_compile_accepts_text_or_ast() -> None:
    text = "params.x = 1 or not 'a' in tags"
    assert compile_filter(text) == compile_filter(parse(text)) == compile_filter(text, SQLITE)


# ---------------------------------------------------------------- reference semantics

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
STAT_INDEX = {"count": 0, "min": 1, "max": 2, "last": 3}


def evaluate(expr: Expr, run: Run) -> bool:
    """Whether ``run`` matches ``expr``, by the semantics the module docstring states."""
    match expr:
        case And(left, right):
            return evaluate(left, run) and evaluate(right, run)
        case Or(left, right):
            return evaluate(left, run) or evaluate(right, run)
        case Not(operand):
            return not evaluate(operand, run)
        case HasTag(tag):
            return tag in run.tags
        case Compare(fld, op, value):
            return _holds(fld, op, [value], run)
        case InList(fld, values, negated):
            return _holds(fld, "not in" if negated else "in", list(values), run)
    raise AssertionError(expr)


def _holds(fld: Field, op: str, values: list[Value], run: Run) -> bool:
    """Whether the field of ``run`` passes ``op`` against ``values``."""
    if isinstance(fld, Param):
        rows = {path: (num, text) for path, num, text in flatten(run.params)}
        if fld.path not in rows:
            return False
        num, text = rows[fld.path]
        if values == [None]:
            return (num is None and text is None) == (op == "=")
        present = [(num, False), (text, True)]  # (stored value, holds a string)
    elif isinstance(fld, SummaryStat):
        if fld.key not in run.series:
            return False
        present = [(run.series[fld.key][STAT_INDEX[fld.stat]], False)]
    elif fld.name == "created":
        present = [(run.created, False)]
        values = [_ts(v) if isinstance(v, str) else v for v in values]
    else:
        present = [(getattr(run, fld.name), True)]

    def same_kind(stored_is_text: bool, value: Value) -> bool:
        return isinstance(value, str) == stored_is_text

    if op in ("in", "not in"):
        member = any(
            stored is not None and stored == value
            for stored, is_text in present
            for value in values
            if same_kind(is_text, value)
        )
        return member if op == "in" else not member
    (value,) = values
    (stored,) = [stored for stored, is_text in present if same_kind(is_text, value)]
    if op == "!=":
        return stored is None or stored != value
    return stored is not None and OPS[op](stored, value)


# ----------------------------------------------------------------- random round trips

BARE_KEY = re.compile(r"[A-Za-z0-9_\-/]+(\.[A-Za-z0-9_\-/]+)*")


def render_string(text: str, quote: str) -> str:
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def render_value(value: Value, quote: str = "'") -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return render_string(value, quote)
    return repr(value)


def render_field(fld: Field) -> str:
    match fld:
        case Param(path):
            return f"params.{path}"
        case SummaryStat(key, stat) if BARE_KEY.fullmatch(key):
            return f"summary.{key}.{stat}"
        case SummaryStat(key, stat):
            return f"summary[{render_string(key, chr(34))}].{stat}"
        case Column(name):
            return name
    raise AssertionError(fld)


def render(expr: Expr, upper: bool = False) -> str:
    """Filter text for ``expr``, parenthesising every operand."""

    def kw(word: str) -> str:
        return word.upper() if upper else word

    match expr:
        case And(left, right):
            return f"({render(left, upper)}) {kw('and')} ({render(right, upper)})"
        case Or(left, right):
            return f"({render(left, upper)}) {kw('or')} ({render(right, upper)})"
        case Not(operand):
            return f"{kw('not')} ({render(operand, upper)})"
        case HasTag(tag):
            return f"{render_value(tag)} {kw('in')} tags"
        case Compare(fld, op, value):
            return f"{render_field(fld)} {op} {render_value(value, chr(34) if upper else chr(39))}"
        case InList(fld, values, negated):
            items = ", ".join(render_value(value) for value in values)
            return f"{render_field(fld)} {kw('not in' if negated else 'in')} ({items})"
    raise AssertionError(expr)


PARAM_PATHS = ["lr", "model.width", "model.act", "use_bn", "opt", "layers", "seed", "note"]
SUMMARY_KEYS = ["train/loss", "val/acc", "train.loss", "val loss", "empty", "nope"]
FIXTURE_STRINGS = ["adam", "sgd", "relu", "gelu", "64", "baseline", "gpu", "x y", "ü", "[1, 2]"]
FIXTURE_STRINGS += [run.name for run in RUNS] + [run.id for run in RUNS] + ["finished", "nlp"]

texts = st.sampled_from(FIXTURE_STRINGS) | st.text(max_size=6)
numbers = (
    st.integers(-300, 300)
    | st.sampled_from([0.1, 0.01, 0.001, 0.0001, 0.05, 0.85, 0.95, 1.5, 2.0, 1e9])
    | st.floats(-1e6, 1e6, allow_nan=False)
)
param_paths = st.sampled_from(PARAM_PATHS) | st.from_regex(
    r"[A-Za-z0-9_\-/]{1,5}(\.[A-Za-z0-9_\-/]{1,5}){0,2}", fullmatch=True
)
summary_keys = st.sampled_from(SUMMARY_KEYS) | st.text(min_size=1, max_size=6)
zones: st.SearchStrategy[tzinfo | None] = st.sampled_from(
    [None, timezone.utc, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9, minutes=30))]
)
dates = st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1), timezones=zones)
iso_dates = dates.map(datetime.isoformat) | dates.map(lambda moment: moment.date().isoformat())
comparison_ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])


@st.composite
def leaves(draw: st.DrawFn) -> Expr:
    """A random comparison, membership test or tag test."""
    kind = draw(st.sampled_from(["param", "summary", "column", "created", "tag"]))
    if kind == "tag":
        return HasTag(draw(texts))
    fld: Field
    items: st.SearchStrategy[Value]  # what an 'in' list holds
    if kind == "param":
        fld, items = Param(draw(param_paths)), numbers | texts | st.booleans()
    elif kind == "summary":
        fld, items = SummaryStat(draw(summary_keys), draw(st.sampled_from(STATS))), numbers
    elif kind == "created":
        fld, items = Column("created"), numbers.map(lambda n: n * 1e4) | iso_dates
    else:
        fld, items = Column(draw(st.sampled_from(["status", "name", "project", "id"]))), texts
    if draw(st.booleans()):
        return InList(
            fld, tuple(draw(st.lists(items, min_size=1, max_size=4))), draw(st.booleans())
        )
    value = draw(items | st.none()) if isinstance(fld, Param) else draw(items)
    equality_only = value is None or isinstance(value, bool)
    return Compare(
        fld, draw(st.sampled_from(["=", "!="]) if equality_only else comparison_ops), value
    )


expressions = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)
    ),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=expressions, upper=st.booleans())
def test_random_filters_round_trip_and_match_reference(
    db: sqlite3.Connection, expr: Expr, upper: bool
) -> None:
    text = render(expr, upper)
    assert parse(text) == expr
    assert select(db, text) == {run.id for run in RUNS if evaluate(expr, run)}


@settings(max_examples=300, deadline=None)
@given(fld=st.sampled_from(PARAM_PATHS).map(Param), op=comparison_ops, value=numbers | texts)
def test_random_param_comparisons_match_reference(
    db: sqlite3.Connection, fld: Param, op: str, value: Value
) -> None:
    expr = Compare(fld, op, value)
    expected = {run.id for run in RUNS if evaluate(expr, run)}
    assert select(db, expr) == expected
    negated = {run.id for run in RUNS if evaluate(Not(expr), run)}
    assert select(db, Not(expr)) == negated == ALL - expected


TOKENS = [
    "params.x",
    "params.lr",
    "summary.a.last",
    "summary['k'].max",
    "tags",
    "name",
    "created",
    "status",
    "foo",
    "(",
    ")",
    "and",
    "OR",
    "not",
    "in",
    "=",
    "==",
    "<",
    "<=",
    "!=",
    "<>",
    ">",
    "'a'",
    '"b"',
    "'2026-01-01'",
    "1",
    "-2.5e3",
    ".5",
    "1e",
    "true",
    "null",
    ",",
    "[",
    "]",
    ".",
    "'",
    '"',
    "\\",
    ";",
    "--",
    "\n",
    "\t",
    "ü",
]


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(max_size=40)
    | st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join)
    | st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)
)
def test_garbage_parses_or_raises_filter_syntax_error(db: sqlite3.Connection, text: str) -> None:
    try:
        expr = parse(text)
    except FilterSyntaxError as error:
        assert error.text == text
        assert 0 <= error.position <= len(text)
        assert "^" in str(error)
    else:
        assert select(db, expr) == {run.id for run in RUNS if evaluate(expr, run)}
