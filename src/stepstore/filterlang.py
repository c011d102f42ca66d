r"""The run filter language: a filter's text parsed into an AST (no SQL here).

The backends compile the AST to SQL (``stepstore.backends.filter_sql``).

A filter is a boolean expression over a run's fields, for example::

    params.lr < 1e-3 and summary.val/acc.max >= 0.9 and 'baseline' in tags
    status in ('finished', 'crashed') or not (created > '2026-11-01')

Fields
    ``params.<path>``
        A hyperparameter; nested params are addressed by a dotted path
        (``params.model.width``). Path parts are letters, digits, ``_``, ``-`` and ``/``.
    ``summary.<key>.<stat>``
        A statistic of a logged series: ``stat`` is one of ``last``, ``min``, ``max``,
        ``count``. The key is everything between ``summary.`` and the last dot, and may
        contain letters, digits, ``_``, ``-``, ``/`` and ``.``: ``summary.train.loss.last``
        is key ``train.loss``, stat ``last``. Any other key is written quoted in brackets:
        ``summary["val loss"].last`` (single or double quotes).
    ``tags``
        Only in ``'x' in tags``, ``'x' not in tags``, ``tags = 'x'`` and ``tags != 'x'``.
    ``status``, ``name``, ``project``, ``id``
        Run columns, compared with strings.
    ``created``
        The creation time, compared with a number of unix seconds or an ISO-8601 date or
        datetime string: ``'2026-11-01'``, ``'2026-11-01T12:00:00+02:00'``,
        ``'2026-11-01T12:00:00Z'``; one without a time zone is UTC.

Field names are case-sensitive; the keywords ``and or not in true false null`` are not.

Values
    Numbers (``3``, ``-0.5``, ``1e-3``; integers must fit in 64 bits), strings in single
    or double quotes (``\\``, ``\'`` and ``\"`` are the only escapes), ``true``,
    ``false`` and ``null``.

Comparisons
    ``FIELD OP VALUE`` or ``VALUE OP FIELD`` with OP one of ``= != < <= > >=`` (``==``
    means ``=``, ``<>`` means ``!=``); comparisons do not chain. ``FIELD in (V, ...)`` and
    ``FIELD not in (V, ...)`` test membership. Combine with ``not``, ``and``, ``or`` (in
    that order of precedence) and parentheses.

Values are typed: ``name``, ``project``, ``id`` and ``status`` take strings, summaries
take numbers, ``created`` takes numbers or dates, params take numbers, strings,
``true``/``false`` (stored as 1/0, so ``params.flag = 1`` matches ``true``) and ``null``
(only with ``=`` and ``!=``). A param or summary compared with a number matches only a
numeric value, and with a string only a string value: there is no coercion, and a list
param holds its JSON text.

Missing values
    No comparison matches a run that lacks the param or series, ``!=`` and ``not in``
    included; ``!=`` and ``not in`` match any value that is present and not equal,
    including one of another type or null. ``not (params.x = 1)`` does match a run
    without ``params.x``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, ParamSpec, TypeAlias, TypeVar, cast

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .errors import FilterSyntaxError, InvalidArgumentError

__all__ = [
    "COLUMNS",
    "MAX_OPERATORS",
    "OPERATORS",
    "STATS",
    "And",
    "Column",
    "Compare",
    "Expr",
    "Field",
    "HasTag",
    "InList",
    "Not",
    "Or",
    "Param",
    "SummaryStat",
    "Value",
    "count_operators",
    "parse",
    "unix_seconds",
]

#: Comparison operators, in their canonical spelling.
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
#: Statistics a ``summary.<key>.<stat>`` field can name.
STATS = ("last", "min", "max", "count")
#: Run columns a filter can name directly.
COLUMNS = ("status", "name", "project", "id", "created")

_KNOWN_FIELDS = "params.<path>, summary.<key>.<stat>, tags, " + ", ".join(COLUMNS)
#: The most and/or/not operators a filter may hold.
MAX_OPERATORS = 100
_INT64 = 2**63
_P = ParamSpec("_P")
_T = TypeVar("_T")

Value: TypeAlias = bool | int | float | str | None


@dataclass(frozen=True)
class Param:
    """A hyperparameter, addressed by its dotted path (``model.width``)."""

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidArgumentError("a params path must be a non-empty string")


@dataclass(frozen=True)
class SummaryStat:
    """One statistic (``last``, ``min``, ``max`` or ``count``) of a logged series."""

    key: str
    stat: str

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise InvalidArgumentError("a summary key must be a non-empty string")
        if self.stat not in STATS:
            raise InvalidArgumentError(
                f"unknown summary statistic {self.stat!r}; known statistics: {', '.join(STATS)}"
            )


@dataclass(frozen=True)
class Column:
    """A column of the run itself: ``status``, ``name``, ``project``, ``id`` or ``created``."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in COLUMNS:
            raise InvalidArgumentError(
                f"unknown field {self.name!r}; known fields: {_KNOWN_FIELDS}"
            )


Field: TypeAlias = Param | SummaryStat | Column


@dataclass(frozen=True)
class Compare:
    """``field op value``, with ``op`` one of :data:`OPERATORS`."""

    field: Field
    op: str
    value: Value

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise InvalidArgumentError(
                f"unknown operator {self.op!r}; operators: {' '.join(OPERATORS)}"
            )
        _check_value(self.field, self.op, self.value)


@dataclass(frozen=True)
class InList:
    """``field in (values)``, or ``field not in (values)`` when ``negated``."""

    field: Field
    values: tuple[Value, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple) or not self.values:
            raise InvalidArgumentError("an 'in' list needs a non-empty tuple of values")
        for value in self.values:
            _check_value(self.field, "in", value)


@dataclass(frozen=True)
class HasTag:
    """The run carries ``tag``."""

    tag: str

    def __post_init__(self) -> None:
        if not isinstance(self.tag, str):
            raise InvalidArgumentError(f"a tag is a string, not {self.tag!r}")


@dataclass(frozen=True)
class Not:
    """The negation of ``operand``."""

    operand: Expr


@dataclass(frozen=True)
class And:
    """Both ``left`` and ``right`` hold."""

    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    """``left`` or ``right`` holds."""

    left: Expr
    right: Expr


Expr: TypeAlias = Compare | InList | HasTag | Not | And | Or


def _check_value(field: Field, op: str, value: Value) -> None:
    """Raise InvalidArgumentError unless ``value`` may follow ``field op`` ("in": a list item)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"numbers must be finite, not {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise InvalidArgumentError(f"integer {value} does not fit in 64 bits; write it as a float")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    match field:
        case Param():
            if value is None and op == "in":
                raise InvalidArgumentError("null cannot be in an 'in' list; use '= null'")
            if (value is None or isinstance(value, bool)) and op not in ("=", "!=", "in"):
                raise InvalidArgumentError(f"{_literal(value)} only compares with = and !=")
            if not (value is None or number or isinstance(value, bool | str)):
                raise InvalidArgumentError(
                    f"params compare with numbers, strings, true, false or null, not {value!r}"
                )
        case SummaryStat():
            if not number:
                raise InvalidArgumentError(f"summaries compare with numbers, not {_literal(value)}")
        case Column(name="created"):
            if isinstance(value, str):
                unix_seconds(value)
            elif not number:
                raise InvalidArgumentError(
                    f"created compares with a number or an ISO-8601 date, not {_literal(value)}"
                )
        case Column(name=name):
            if not isinstance(value, str):
                raise InvalidArgumentError(f"{name} compares with strings, not {_literal(value)}")
        case _:
            raise InvalidArgumentError(f"not a field: {field!r}")


def _literal(value: Value) -> str:
    """The filter-language spelling of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def unix_seconds(text: str) -> float:
    """Unix seconds of an ISO-8601 date or datetime (naive means UTC)."""
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError):
        raise InvalidArgumentError(
            f"{text!r} is not an ISO-8601 date or datetime (e.g. '2026-11-01T12:00:00')"
        ) from None


# ----------------------------------------------------------------------------- parsing

_NAME_CHARS = r"[A-Za-z0-9_\-\/.]"

_GRAMMAR = rf"""
?start: disjunction
?disjunction: conjunction (_OR conjunction)*
?conjunction: negation (_AND negation)*
?negation: _NOT negation -> negate
    | comparison
    | "(" disjunction ")"
comparison: field COMP_OP value -> field_op_value
    | value COMP_OP field -> value_op_field
    | field _IN values -> field_in
    | field _NOT _IN values -> field_not_in
    | value _IN field -> value_in
    | value _NOT _IN field -> value_not_in
values: "(" value ("," value)* ")"
field: NAME -> bare_field
    | NAME "[" STRING "]" "." NAME -> quoted_field
?value: STRING | NUMBER | TRUE | FALSE | NULL

_OR.2: /or(?!{_NAME_CHARS})/i
_AND.2: /and(?!{_NAME_CHARS})/i
_NOT.2: /not(?!{_NAME_CHARS})/i
_IN.2: /in(?!{_NAME_CHARS})/i
TRUE.2: /true(?!{_NAME_CHARS})/i
FALSE.2: /false(?!{_NAME_CHARS})/i
NULL.2: /null(?!{_NAME_CHARS})/i
NAME: /[A-Za-z_]{_NAME_CHARS}*/
NUMBER: /-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"([^"\\]|\\.)*"/s | /'([^'\\]|\\.)*'/s
COMP_OP: "==" | "!=" | "<>" | "<=" | ">=" | "=" | "<" | ">"

%ignore /\s+/
"""

_SPELLINGS = {"==": "=", "<>": "!="}
_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_WORDS = {
    "NAME": "a field",
    "STRING": "a value",
    "NUMBER": "a value",
    "TRUE": "a value",
    "FALSE": "a value",
    "NULL": "a value",
    "COMP_OP": "a comparison operator",
    "_IN": "'in'",
    "_NOT": "'not'",
    "_AND": "'and'",
    "_OR": "'or'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "RSQB": "']'",
    "DOT": "'.'",
    "$END": "the end of the filter",
}


class _SemanticError(Exception):
    """A semantic error found while building the AST, at a character offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


class _Tags:
    """The ``tags`` pseudo-field, which only ``'x' in tags`` and ``tags = 'x'`` use."""


class _FieldAt(NamedTuple):
    """A parsed field and where it starts."""

    field: Field | _Tags
    position: int


class _ValueAt(NamedTuple):
    """A parsed value and where it starts."""

    value: Value
    position: int


def _build(position: int, make: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``make(*args, **kwargs)``, reporting an InvalidArgumentError as a problem at ``position``."""
    try:
        return make(*args, **kwargs)
    except InvalidArgumentError as error:
        raise _SemanticError(str(error), position) from None


def _decode_string(token: Token) -> str:
    """The text a string literal token denotes."""
    text = str(token)
    for escape in _ESCAPE.finditer(text, 1, len(text) - 1):
        if escape.group(1) not in "\\'\"":
            raise _SemanticError(
                f"unknown escape {escape.group(0)!r} in a string; "
                "only \\\\, \\' and \\\" are escapes",
                (token.start_pos or 0) + escape.start(),
            )
    return _ESCAPE.sub(r"\1", text[1:-1])


def _decode_value(token: Token) -> _ValueAt:
    """The Python value of a literal token."""
    position = token.start_pos or 0
    text = str(token)
    if token.type == "STRING":
        return _ValueAt(_decode_string(token), position)
    if token.type == "NUMBER":
        if re.fullmatch(r"-?\d+", text):
            if len(text.lstrip("-")) > 19 or not -_INT64 <= int(text) < _INT64:
                raise _SemanticError(
                    f"integer {text} does not fit in 64 bits; write it as a float", position
                )
            return _ValueAt(int(text), position)
        number = float(text)
        if not math.isfinite(number):
            raise _SemanticError(f"number {text} is out of range", position)
        return _ValueAt(number, position)
    return _ValueAt({"TRUE": True, "FALSE": False, "NULL": None}[token.type], position)


def _resolve_field(name: str, position: int) -> Field | _Tags:
    """The field a bare name such as ``params.lr`` or ``summary.loss.min`` denotes."""
    if name == "tags":
        return _Tags()
    if name == "params" or name.startswith("params."):
        path = name[len("params.") :]
        if not path or "" in path.split("."):
            raise _SemanticError(f"{name!r}: write a param as params.<dotted.path>", position)
        return Param(path)
    if name == "summary" or name.startswith("summary."):
        key, _, stat = name[len("summary.") :].rpartition(".")
        if not key or "" in key.split("."):
            raise _SemanticError(
                f"{name!r}: write a summary as summary.<key>.<stat> (or summary['key'].<stat>)"
                f" with stat one of {', '.join(STATS)}",
                position,
            )
        return _build(position + len(name) - len(stat), SummaryStat, key, stat)
    return _build(position, Column, name)


class _ToAst(Transformer[Token, Expr]):
    """Builds the AST as the LALR parser reduces (stateless, shared by all parses)."""

    def disjunction(self, children: list[Expr]) -> Expr:
        return functools.reduce(Or, children)

    def conjunction(self, children: list[Expr]) -> Expr:
        return functools.reduce(And, children)

    def negate(self, children: list[Expr]) -> Expr:
        return Not(children[0])

    def bare_field(self, children: list[Token]) -> _FieldAt:
        (name,) = children
        position = name.start_pos or 0
        return _FieldAt(_resolve_field(str(name), position), position)

    def quoted_field(self, children: list[Token]) -> _FieldAt:
        name, key, stat = children
        position = name.start_pos or 0
        if name != "summary":
            raise _SemanticError(
                "only summary fields take a quoted key: summary['key'].stat", position
            )
        key_text = _decode_string(key)
        if not key_text:
            raise _SemanticError("a summary key cannot be empty", key.start_pos or 0)
        return _FieldAt(_build(stat.start_pos or 0, SummaryStat, key_text, str(stat)), position)

    def values(self, children: list[Token]) -> list[_ValueAt]:
        return [_decode_value(token) for token in children]

    def field_op_value(self, children: list[Any]) -> Expr:
        field, op, value = children
        return _comparison(field, op, _decode_value(value))

    def value_op_field(self, children: list[Any]) -> Expr:
        value, op, field = children
        return _comparison(field, op, _decode_value(value), flip=True)

    def field_in(self, children: list[Any]) -> Expr:
        field, values = children
        return _membership(field, values, negated=False)

    def field_not_in(self, children: list[Any]) -> Expr:
        field, values = children
        return _membership(field, values, negated=True)

    def value_in(self, children: list[Any]) -> Expr:
        value, field = children
        return _has_tag(_decode_value(value), field)

    def value_not_in(self, children: list[Any]) -> Expr:
        value, field = children
        return Not(_has_tag(_decode_value(value), field))


def _comparison(field: _FieldAt, op_token: Token, value: _ValueAt, *, flip: bool = False) -> Expr:
    """The AST of ``field op value`` (of ``value op field`` when ``flip``)."""
    op = _SPELLINGS.get(str(op_token), str(op_token))
    op = _FLIPPED[op] if flip else op
    if isinstance(field.field, _Tags):
        if op not in ("=", "!="):
            raise _SemanticError(
                "tags only compares with = and != (or write 'x' in tags)", op_token.start_pos or 0
            )
        has_tag = _has_tag(value, field)
        return has_tag if op == "=" else Not(has_tag)
    return _build(value.position, Compare, field.field, op, value.value)


def _membership(field: _FieldAt, values: list[_ValueAt], *, negated: bool) -> Expr:
    """The AST of ``field [not] in (values)``."""
    if isinstance(field.field, _Tags):
        raise _SemanticError("write a tag test as 'x' in tags, not tags in (...)", field.position)
    for value in values:
        _build(value.position, _check_value, field.field, "in", value.value)
    return InList(field.field, tuple(value.value for value in values), negated)


def _has_tag(value: _ValueAt, field: _FieldAt) -> HasTag:
    """The AST of ``value in tags``."""
    if not isinstance(field.field, _Tags):
        raise _SemanticError(
            "only tags can follow 'VALUE in'; test a field with FIELD in (VALUE, ...)",
            field.position,
        )
    if not isinstance(value.value, str):
        raise _SemanticError(f"a tag is a string, not {_literal(value.value)}", value.position)
    return HasTag(value.value)


@functools.cache
def _parser() -> Lark:
    """The LALR parser, built on first use."""
    return Lark(_GRAMMAR, parser="lalr", lexer="basic", transformer=_ToAst())


def parse(text: str) -> Expr:
    """Parse a filter expression.

    Args:
        text: The filter, in the language described in this module's docstring.

    Returns:
        The expression's AST.

    Raises:
        FilterSyntaxError: The text is empty, does not parse, names an unknown field or
            compares a field with a value of the wrong kind. The message gives the column,
            repeats the text with a caret under the problem and says what was expected;
            the error's ``position`` is the problem's 0-based offset in ``text``.
        InvalidArgumentError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"a filter is a string, not {type(text).__name__}")
    if not text.strip():
        raise _syntax_error(text, len(text), "the filter is empty")
    try:
        expr = cast(Expr, _parser().parse(text))
    except _SemanticError as problem:
        raise _syntax_error(text, problem.position, str(problem)) from None
    except (UnexpectedCharacters, UnexpectedToken) as error:
        raise _describe(text, error) from None
    if count_operators(expr) > MAX_OPERATORS:
        raise _syntax_error(
            text, 0, f"the filter has more than {MAX_OPERATORS} and/or/not operators"
        )
    return expr


def count_operators(expr: Expr) -> int:
    """How many ``and``, ``or`` and ``not`` nodes ``expr`` holds."""
    count, pending = 0, [expr]
    while pending:
        node = pending.pop()
        if isinstance(node, And | Or):
            pending += [node.left, node.right]
        elif isinstance(node, Not):
            pending.append(node.operand)
        else:
            continue
        count += 1
    return count


def _describe(text: str, error: UnexpectedCharacters | UnexpectedToken) -> FilterSyntaxError:
    """A FilterSyntaxError for lark's report of a syntax error."""
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        if text[position] in "'\"":
            return _syntax_error(text, position, "unterminated string (no closing quote)")
        found = repr(text[position])
    elif error.token.type == "$END":
        position, found = len(text), "the end"
    else:
        position, found = error.token.start_pos or 0, repr(str(error.token))
    previous = _previous_token(text, position)
    after = f" after {previous!r}" if previous else " at the start"
    return _syntax_error(text, position, f"expected {_expected(error)}{after}, found {found}")


def _expected(error: UnexpectedInput) -> str:
    """What the parser would have accepted, in plain words."""
    names: set[str] = error.interactive_parser.accepts()  # type: ignore[no-untyped-call]
    words: list[str] = []
    for name in sorted(names & _WORDS.keys(), key=list(_WORDS).index):
        word = "'not in'" if name == "_NOT" and "_IN" in names else _WORDS[name]
        if word not in words:
            words.append(word)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _previous_token(text: str, position: int) -> str:
    """The text of the last token that ends at or before ``position``."""
    previous = ""
    try:
        for token in _parser().lex(text):
            if (token.end_pos or 0) > position:
                break
            previous = str(token)
    except UnexpectedCharacters:
        pass
    return previous


def _syntax_error(text: str, position: int, problem: str) -> FilterSyntaxError:
    """A FilterSyntaxError quoting the line of ``text`` with a caret under ``position``."""
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    line = text[line_start : len(text) if line_end < 0 else line_end].rstrip("\r")
    column = position - line_start + 1
    where = f"column {column}"
    if "\n" in text:
        where = f"line {text.count(chr(10), 0, position) + 1}, {where}"
    pad = "".join(char if char == "\t" else " " for char in line[: column - 1])
    return FilterSyntaxError(
        f"invalid filter at {where}: {problem}\n  {line}\n  {pad}^", text=text, position=position
    )
