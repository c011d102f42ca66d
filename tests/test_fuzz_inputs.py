"""Bad-input fuzzing beyond ``run.log`` scalars (test_fuzz.py has those, the filter language
and the CLI): capture-policy constructors and combinators, what policies record against a
model of their documented semantics, tensors of every NumPy/torch dtype and layout, images
and records. Accepted input round-trips exactly; refused input raises a StepstoreError
naming the argument or key, the value and what was expected; nothing recorded before a
refusal is lost, and a refused call does not move the run's step on."""

from __future__ import annotations

import datetime
import fnmatch
import math
import numbers
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepstore as ss
from stepstore.policies import AllOf, AnyOf

from .conftest import FAST
from .test_fuzz import anything

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - comes with the torch extra
    ml_dtypes = None

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- capture policies ----------------------------------------------------------------------

arguments = st.one_of(
    anything,
    st.integers(-3, 12),
    st.floats(0.5, 12),
    st.sampled_from(
        [
            np.int64(3),
            np.int32(-2),
            np.uint64(2**64 - 1),
            np.float32(2.5),
            np.float64("nan"),
            np.bool_(True),
            Fraction(3, 2),
            Decimal(2),
            2**1100,
            1.0009,
            1.001,
            math.inf,
            -math.inf,
            [3],
        ]
    ),
)


def is_int(value: Any, minimum: int) -> bool:
    """The documented integer arguments: Python or NumPy integers (not bools)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def as_real(value: Any) -> float | None:
    """The documented number arguments as floats (huge ints are infinite), or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def expected_policy(name: str, args: list[Any]) -> tuple[str | None, str | None]:
    """(repr of the policy the documented rules accept, the text a refusal must contain)."""
    if name in ("every", "first"):
        (n,) = args[:1]
        return (f"{name}({int(n)})", None) if is_int(n, 1) else (None, f"{name}(n)={n!r}")
    if name == "at":
        bad = [s for s in args if not is_int(s, 0)]
        if bad:
            return None, f"at(step)={bad[0]!r}"
        return f"at({', '.join(str(s) for s in sorted({int(s) for s in args}))})", None
    if name == "window":
        start, stop = args[0], args[1] if len(args) > 1 else None
        if not is_int(start, 0):
            return None, f"window(start)={start!r}"
        if stop is not None and not is_int(stop, int(start) + 1):
            return None, f"window(stop)={stop!r}"
        return f"window({int(start)}, {None if stop is None else int(stop)})", None
    if name == "log_spaced":
        base = args[0]
        number = as_real(base)
        if isinstance(base, numbers.Integral) and number is not None and base > 1:
            return f"log_spaced(base={int(base)!r})", None
        if number is None or not 1.001 <= number < math.inf:
            return None, f"log_spaced(base={base!r}): expected a number"
        return f"log_spaced(base={number!r})", None
    key, rel, tol = [*args, None, None][:3]
    if not isinstance(key, str) or not key:
        return None, f"on_change(key={key!r}): expected a non-empty key name"
    shown = [repr(key)]
    for arg, value in (("rel", rel), ("abs", tol)):
        number = None if value is None else as_real(value)
        if value is not None and (number is None or not number >= 0):
            return None, f"on_change({arg}={value!r}): expected a number >= 0 or None"
        if value is not None:
            kept = value if type(value) in (int, float) and value == number else number
            shown.append(f"{arg}={kept!r}")
    return f"on_change({', '.join(shown)})", None


@FUZZ
@given(
    name=st.sampled_from(["every", "first", "at", "window", "log_spaced", "on_change"]),
    args=st.lists(arguments, min_size=1, max_size=3),
    key=st.one_of(st.sampled_from(["loss", "val/acc"]), st.text(max_size=3)),
)
def test_policy_constructors_accept_or_name_the_bad_argument(name, args, key):
    if name == "on_change" and len(args) < 3:
        args = [key, *args]  # mostly a usable key, so rel= and abs= get fuzzed too
    make = {
        "every": lambda: ss.every(args[0]),
        "first": lambda: ss.first(args[0]),
        "at": lambda: ss.at(*args),
        "window": lambda: ss.window(*args[:2]),
        "log_spaced": lambda: ss.log_spaced(args[0]),
        "on_change": lambda: ss.on_change(*args[:3]),
    }[name]
    shown, refusal = expected_policy(name, args)
    if refusal is not None:
        with pytest.raises(ss.InvalidArgumentError, match=re.escape(refusal)):
            make()
        return
    policy = make()
    assert repr(policy) == shown
    assert policy == make() and hash(policy) == hash(make())
    if name == "log_spaced":
        base = policy.base
        assert policy.marks[:3] == (0, 1, max(2, math.ceil(base)))
        assert all(b > a for a, b in zip(policy.marks, policy.marks[1:], strict=False))


def test_policy_constructors_with_no_arguments():
    assert repr(ss.every_epoch()) == "every_epoch()"
    with pytest.raises(ss.InvalidArgumentError, match=r"at\(\): expected at least one step"):
        ss.at()
    assert repr(ss.log_spaced()) == "log_spaced(base=2)"


leaf_policies = st.one_of(
    st.integers(1, 60).map(ss.every),
    st.just(ss.every_epoch()),
    st.lists(st.integers(0, 400), min_size=1, max_size=8).map(lambda s: ss.at(*s)),
    st.sampled_from([1.001, 1.5, 2, 3, 10, np.float64(2.5), np.int64(4)]).map(ss.log_spaced),
    st.integers(1, 20).map(ss.first),
    st.tuples(st.integers(0, 300), st.one_of(st.none(), st.integers(1, 300))).map(
        lambda t: ss.window(t[0], None if t[1] is None else t[0] + t[1])
    ),
)
valid_policies = st.recursive(
    leaf_policies,
    lambda inner: st.tuples(inner, inner, st.booleans()).map(
        lambda t: t[0] | t[1] if t[2] else t[0] & t[1]
    ),
    max_leaves=4,
)
non_policies = arguments.filter(lambda v: not isinstance(v, ss.Policy))


@FUZZ
@given(
    policy=valid_policies,
    other=non_policies,
    op=st.sampled_from(["|", "&"]),
    policy_first=st.booleans(),
)
def test_combining_a_policy_with_a_non_policy_is_refused(policy, other, op, policy_first):
    combine = {"|": lambda a, b: a | b, "&": lambda a, b: a & b}[op]
    left, right = (policy, other) if policy_first else (other, policy)
    with pytest.raises(
        ss.InvalidArgumentError,
        match=rf"cannot combine a policy with .* using '\{op}': expected another policy",
    ):
        combine(left, right)
    both = combine(policy, policy)
    assert repr(both) == f"({policy!r} {op} {policy!r})"


@pytest.fixture
def run(new_run):
    """One run shared by all the examples of a test."""
    return new_run("fuzz-inputs")


@FUZZ
@given(
    pattern=st.one_of(st.sampled_from(["*", "x", "grad/*"]), st.text(max_size=4), arguments),
    when=st.one_of(valid_policies, arguments),
)
def test_run_policy_accepts_or_names_the_bad_argument(run, pattern, when):
    if not isinstance(pattern, str) or not pattern:
        with pytest.raises(ss.InvalidArgumentError, match=r"pattern=.*: expected a non-empty"):
            run.policy(pattern, when)
        return
    if not isinstance(when, ss.Policy):
        with pytest.raises(ss.InvalidArgumentError, match=r"when=.*: expected a capture policy"):
            run.policy(pattern, when)
        if when is not None:
            step = run.step
            with pytest.raises(ss.InvalidArgumentError, match=r"when=.*: expected a capture"):
                run.log({"x": 1.0}, when=when)
            assert run.step == step
        return
    assert run.policy(pattern, when) is run
    assert run.capture_info()["bindings"][-1] == {"pattern": pattern, "policy": repr(when)}


# -- what policies record, against a model written from policies.py's docstrings ---------


class KeyModel:
    """The recorded history of a key that policies decide on."""

    def __init__(self) -> None:
        self.count = 0
        self.last_step = -1
        self.last_epoch: int | None = None


def first_mark_after(base: float, after: int) -> int:
    """The first log_spaced mark above ``after``: 0, 1, then each mark times ``base``
    rounded up, and at least one more than the previous mark."""
    if after < 0:
        return 0
    mark = 1
    while mark <= after:
        mark = max(mark + 1, math.ceil(mark * base))
    return mark


def model_accepts(policy: ss.Policy, step: int, epoch: int | None, key: KeyModel) -> bool:
    if isinstance(policy, AnyOf):
        return model_accepts(policy.a, step, epoch, key) or model_accepts(
            policy.b, step, epoch, key
        )
    if isinstance(policy, AllOf):
        return model_accepts(policy.a, step, epoch, key) and model_accepts(
            policy.b, step, epoch, key
        )
    if isinstance(policy, ss.every):
        return step % policy.n == 0
    if isinstance(policy, ss.every_epoch):  # the first point offered in each new epoch
        return epoch is not None and (key.count == 0 or epoch != key.last_epoch)
    if isinstance(policy, ss.at):
        return step in policy.steps
    if isinstance(policy, ss.log_spaced):  # the first point at or after each mark
        return key.count == 0 or step >= first_mark_after(policy.base, key.last_step)
    if isinstance(policy, ss.first):
        return key.count < policy.n
    if isinstance(policy, ss.window):
        return policy.start <= step and (policy.stop is None or step < policy.stop)
    raise AssertionError(policy)


patterns = st.sampled_from(["a", "b", "t", "*", "[ab]", "t*"])
script = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-3, 40)),  # None: auto step; k: k past the last
        st.one_of(st.none(), st.integers(0, 2)),  # None: keep the epoch; k: k more
        st.sets(st.sampled_from(["a", "b", "t"]), min_size=1),
        st.one_of(st.none(), st.none(), valid_policies),  # when=
        st.one_of(st.none(), st.none(), st.tuples(patterns, valid_policies)),  # rebind
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bindings=st.lists(st.tuples(patterns, valid_policies), max_size=2),
    calls=script,
    first_epoch=st.one_of(st.none(), st.integers(0, 3)),
)
def test_recorded_points_match_the_documented_policies(
    tmp_path_factory, bindings, calls, first_epoch
):
    store = tmp_path_factory.mktemp("model")
    run = ss.init("model", store=store, **FAST)
    bindings = list(bindings)  # later rebinds are appended; later bindings win
    for pattern, policy in bindings:
        run.policy(pattern, policy)
    keys = {k: KeyModel() for k in ("a", "b", "t")}
    expected: dict[str, list[tuple[int, int | None, int]]] = {k: [] for k in keys}
    auto, run_epoch = 0, None
    for index, (move, more_epochs, names, when, rebind) in enumerate(calls):
        if rebind is not None:
            run.policy(*rebind)
            bindings.append(rebind)
        step = auto if move is None else max(0, auto - 1 + move)
        epoch = None
        if more_epochs is not None:
            epoch = (run_epoch if run_epoch is not None else first_epoch or 0) + more_epochs
        values = {
            k: np.full(2, index, np.int64) if k == "t" else float(index) for k in sorted(names)
        }
        if any(step <= keys[k].last_step for k in names):  # one value per key and step
            with pytest.raises(ss.StepOrderError, match=rf"step {step} is (below|at) its last"):
                run.log(values, step=None if move is None else step, epoch=epoch, when=when)
            assert run.step == auto  # a refused call leaves the run's step alone
            continue
        run.log(values, step=None if move is None else step, epoch=epoch, when=when)
        run_epoch = epoch if epoch is not None else run_epoch
        auto = max(auto, step + 1)
        for k in sorted(names):
            bound = [p for pattern, p in bindings if fnmatch.fnmatchcase(k, pattern)]
            policy = when if when is not None else (bound[-1] if bound else None)
            if policy is None or model_accepts(policy, step, run_epoch, keys[k]):
                expected[k].append((step, run_epoch, index))
                keys[k].count += 1
                keys[k].last_step, keys[k].last_epoch = step, run_epoch
    run.finish()
    view = ss.open(store).run(run.id)
    for k in ("a", "b"):
        frame = view.scalars(k) if k in view.keys() else None
        got = (
            []
            if frame is None
            else [
                (int(s), None if pd.isna(e) else int(e), int(v))
                for s, e, v in zip(frame["step"], frame["epoch"], frame["value"], strict=True)
            ]
        )
        assert got == [(s, e, i) for s, e, i in expected[k]], k
    if expected["t"]:
        series = view.tensor("t")
        assert series.steps.tolist() == [s for s, _, _ in expected["t"]]
        assert series[:].tolist() == [[i, i] for _, _, i in expected["t"]]
        assert series.epochs().tolist() == [-1 if e is None else e for _, e, _ in expected["t"]]
    else:
        assert "t" not in view.keys() or len(view.tensor("t")) == 0


# -- tensors -------------------------------------------------------------------------------

SUPPORTED = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
SUPPORTED |= {"float16", "float32", "float64", "bfloat16"}
SUPPORTED_DTYPES = [
    np.dtype(c) for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
]
SUPPORTED_DTYPES += [np.dtype(c) for c in (">i2", ">i4", ">u8", ">f2", ">f4", ">f8")]
UNSUPPORTED_DTYPES = [
    np.dtype(c) for c in ("c8", "c16", "M8[ns]", "M8[D]", "m8[s]", "U3", "S2", "O", "V4")
]
UNSUPPORTED_DTYPES += [np.dtype([("a", "<i4"), ("b", "<f8")]), np.dtype(np.longdouble)]
if ml_dtypes is not None:
    SUPPORTED_DTYPES.append(np.dtype(ml_dtypes.bfloat16))
    UNSUPPORTED_DTYPES += [np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.int4)]
UNSUPPORTED_DTYPES = [d for d in UNSUPPORTED_DTYPES if d.names or d.name not in SUPPORTED]


def stored_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a tensor of ``dtype`` reads back as: the same, little-endian."""
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def array_of(dtype: np.dtype, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    if dtype.name == "bfloat16":  # every bit pattern, NaN payloads included
        return hnp.arrays(np.uint16, shape).map(lambda a: a.view(dtype))
    return hnp.arrays(dtype, shape)


LAYOUTS = {
    "c": lambda a: a,
    "fortran": np.asfortranarray,
    "transposed": lambda a: a.T,
    "reversed": lambda a: a[(slice(None, None, -1),) * a.ndim],
    "strided": lambda a: a[::2],
    "read-only": lambda a: _read_only(a.copy()),
    "broadcast": lambda a: np.broadcast_to(a, (2, *a.shape)),
}


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@st.composite
def tensors(draw: st.DrawFn, dtype: np.dtype) -> tuple[np.ndarray, str]:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=6, min_side=0, max_side=3))
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    return LAYOUTS[layout](draw(array_of(dtype, shape))), layout


def same_bits(got: np.ndarray, logged: np.ndarray) -> bool:
    """Exact equality: dtype, shape and every byte (NaN payloads and -0.0 included)."""
    want = np.ascontiguousarray(logged, dtype=stored_dtype(logged.dtype))
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def test_tensors_of_every_dtype_and_layout_round_trip_or_are_refused(run, store_path):
    kept: dict[str, list[tuple[int, np.ndarray]]] = {}
    counter = iter(range(10**6))

    @FUZZ
    @given(data=st.data(), dtype=st.sampled_from(SUPPORTED_DTYPES))
    def example(data, dtype):
        key = f"t{next(counter)}"
        for _ in range(data.draw(st.integers(1, 3))):
            bad = data.draw(st.one_of(st.none(), st.none(), st.sampled_from(UNSUPPORTED_DTYPES)))
            step = next(counter)
            if bad is not None:
                before = run.step
                with pytest.raises(
                    ss.InvalidValueError,
                    match=re.escape(f"key {key!r}: tensors of dtype {bad} are not supported"),
                ):
                    run.log({key: np.zeros((2, 1), bad), "anchor": 1.0}, step=step)
                assert run.step == before
                continue
            array, _ = data.draw(tensors(dtype))
            expected = np.array(array)  # the values at log() time
            run.log({key: array}, step=step)
            kept.setdefault(key, []).append((step, expected))
        if key in kept:
            run.flush()
            check(ss.open(store_path).run(run.id), key, kept[key])

    example()
    run.finish()
    view = ss.open(store_path).run(run.id)  # after finish: nothing lost to the refusals
    for key, points in kept.items():
        check(view, key, points)
    assert "anchor" not in view.keys()
    assert len(kept) >= 10  # the examples did round-trip tensors


def check(view: ss.RunView, key: str, points: list[tuple[int, np.ndarray]]) -> None:
    series = view.tensor(key)
    assert series.steps.tolist() == [step for step, _ in points]
    assert series.dtype == stored_dtype(points[0][1].dtype)
    for step, expected in points:
        assert same_bits(series.at(step), expected), (key, step)


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("float64", "int32"),
        ("float32", "float16"),
        ("int64", "bool"),
        ("float64", "int64"),
        ("int8", "float64"),
        ("float16", "float32"),
        ("uint8", "int8"),
    ],
)
def test_a_tensor_whose_dtype_changes_is_stored_exactly_as_logged(new_run, store_path, first, then):
    run = new_run()
    before = np.arange(3, dtype=first)
    after = np.array([2**62 + 1 if then == "int64" else 1, 0, 1], dtype=then)
    run.log({"w": before}, step=0)
    run.log({"w": after}, step=1)
    run.finish()
    series = ss.open(store_path).run(run.id).tensor("w")
    assert same_bits(series.at(0), before) and same_bits(series.at(1), after)
    assert series.dtype == np.result_type(first, then)
    assert series[:].tolist() == np.stack([before, after]).astype(series.dtype).tolist()


def test_bfloat16_beside_float16_reads_back_as_float32(new_run, store_path):
    torch = pytest.importorskip("torch")
    run = new_run()
    halves = torch.tensor([1.5, -2.0], dtype=torch.bfloat16), torch.tensor([0.1, 3.0]).half()
    run.log({"act": halves[0]}, step=0)  # e.g. activations under autocast, then without
    run.log({"act": halves[1]}, step=1)
    run.finish()
    series = ss.open(store_path).run(run.id).tensor("act")
    assert series.at(0).dtype.name == "bfloat16" and series.at(1).dtype == np.float16
    assert series.dtype == np.float32
    assert series[:].tolist() == [[1.5, -2.0], [float(np.float16(0.1)), 3.0]]


def test_torch_tensors_round_trip_or_are_refused(run, store_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")  # reads bfloat16 back
    kept: list[tuple[str, np.ndarray]] = []
    counter = iter(range(10**6))
    dtypes = {
        "float32": np.float32,
        "float64": np.float64,
        "float16": np.float16,
        "bfloat16": np.float32,
        "int64": np.int64,
        "int8": np.int8,
        "uint8": np.uint8,
        "bool": np.bool_,
    }

    @FUZZ
    @given(
        data=st.data(),
        name=st.sampled_from([*sorted(dtypes), "complex64", "float8_e4m3fn", "sparse"]),
        layout=st.sampled_from(["contiguous", "transposed", "strided", "expanded", "grad"]),
    )
    def example(data, name, layout):
        key, step = f"torch{next(counter)}", next(counter)
        if name not in dtypes:
            tensor = torch.zeros(2, 3)
            tensor = tensor.to_sparse() if name == "sparse" else tensor.to(getattr(torch, name))
            what = "a sparse_coo tensor" if name == "sparse" else f"tensors of dtype {name}"
            with pytest.raises(ss.InvalidValueError, match=rf"key '{key}': .*{what}"):
                run.log({key: tensor}, step=step)
            return
        shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4))
        tensor = torch.from_numpy(data.draw(hnp.arrays(dtypes[name], shape)))
        tensor = tensor.to(getattr(torch, name))
        if layout == "transposed":
            tensor = tensor.transpose(0, -1)
        elif layout == "strided":
            tensor = tensor[::2]
        elif layout == "expanded":
            tensor = tensor.unsqueeze(0).expand(2, *tensor.shape)
        elif layout == "grad" and tensor.is_floating_point():
            tensor = tensor.clone().requires_grad_(True)
        if name == "bfloat16":
            expected = tensor.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            expected = tensor.detach().numpy()
        run.log({key: tensor}, step=step)
        kept.append((key, np.array(expected)))

    example()
    assert kept
    run.finish()
    view = ss.open(store_path).run(run.id)
    for key, expected in kept:
        series = view.tensor(key)
        assert series.dtype == expected.dtype
        assert same_bits(series.at(int(series.steps[0])), expected), key


# -- images --------------------------------------------------------------------------------

IMAGE_DTYPES = [
    np.dtype(c)
    for c in ("u1", "?", "f2", "f4", "f8", "i1", "i2", "i8", "u2", "u8", "c8", "M8[s]", "U1", "O")
]
captions = st.one_of(
    st.none(),
    st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=6),
    st.integers(-2, 2),
    st.binary(max_size=2),
)
sides = st.integers(0, 5)
image_shapes = st.one_of(
    st.tuples(sides, sides),
    st.tuples(sides, sides, st.sampled_from([1, 2, 3, 4, 5])),
    st.tuples(st.sampled_from([1, 3, 4]), sides, sides),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=3),
)


def pixels(dtype: np.dtype) -> st.SearchStrategy[Any]:
    if dtype.kind == "f":
        width = 8 * dtype.itemsize
        return st.one_of(st.floats(0, 1, width=width), st.floats(width=width))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        in_range = st.integers(0, min(255, int(info.max)))
        return st.one_of(in_range, st.integers(int(info.min), int(info.max)))
    if dtype.kind == "O":
        return st.integers(0, 255)
    return hnp.from_dtype(dtype)


def documented_image(array: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """The uint8 image ``Image(array)`` documents, or the text of its refusal."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CxHxW
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        return None, f"image: shape {array.shape} is not an image"
    if array.size == 0:
        return None, f"image: shape {array.shape} has no pixels"
    if array.dtype == np.uint8:
        return array, None
    if array.dtype == np.bool_:
        return np.where(array, 255, 0).astype(np.uint8), None
    if array.dtype.kind == "f":
        if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            return None, "image: float pixels must be finite and in [0, 1]"
        return np.round(array.astype(np.float64) * 255).astype(np.uint8), None
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            return None, "image: integer pixels must be in [0, 255]"
        return array.astype(np.uint8), None
    return None, f"image: dtype {array.dtype} is not an image dtype"


def test_images_round_trip_or_are_refused(run, store_path):
    kept: list[tuple[str, int, list[tuple[str | None, np.ndarray]]]] = []
    counter = iter(range(10**6))

    @FUZZ
    @given(data=st.data(), count=st.integers(1, 2))
    def example(data, count):
        key, step, images = f"img{next(counter)}", next(counter), []
        for _ in range(count):
            dtype = data.draw(st.sampled_from(IMAGE_DTYPES))
            source = data.draw(hnp.arrays(dtype, data.draw(image_shapes), elements=pixels(dtype)))
            caption = data.draw(captions)
            expected, refusal = documented_image(source)
            if caption is not None and not isinstance(caption, str):
                refusal = f"caption={caption!r}: expected a string or None"
            elif caption is not None and has_surrogate(caption):
                refusal = f"caption={caption!r}: not valid Unicode text"
            if refusal is not None:
                with pytest.raises(ss.InvalidValueError, match=re.escape(refusal)):
                    ss.Image(source, caption=caption)
                continue
            images.append((ss.Image(source, caption=caption), source, caption, expected.copy()))
        if images:
            record(key, step, images)

    def record(key: str, step: int, images: list[tuple[ss.Image, Any, Any, np.ndarray]]) -> None:
        run.log({key: [image for image, *_ in images]}, step=step)
        for _, source, _, _ in images:
            source[...] = 0  # the caller's buffer is free again once log() returns
        kept.append((key, step, [(caption, expected) for _, _, caption, expected in images]))
        run.flush()
        check_images(ss.open(store_path).run(run.id), *kept[-1])

    example()
    # One valid image whatever Hypothesis drew, so the read-back below always has work to do.
    fixed = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    record("img-fixed", 10**7, [(ss.Image(fixed.copy(), caption="x"), fixed.copy(), "x", fixed)])
    run.finish()
    view = ss.open(store_path).run(run.id)
    for key, step, images in kept:
        check_images(view, key, step, images)


def check_images(
    view: ss.RunView, key: str, step: int, images: list[tuple[str | None, np.ndarray]]
) -> None:
    got = view.images(key)
    assert [(i.step, i.caption) for i in got] == [(step, c) for c, _ in images]
    for logged, (_, expected) in zip(got, images, strict=True):
        assert logged.array.dtype == np.uint8
        assert np.array_equal(logged.array, expected), key


def test_images_of_odd_inputs_are_explained():
    pil = pytest.importorskip("PIL.Image")
    ragged = [[1, 2], [3]]
    with pytest.raises(ss.InvalidValueError, match=r"image: cannot read \[\[1, 2\], \[3\]\]"):
        ss.Image(ragged)
    picture = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    for mode, channels in (("P", 3), ("LA", 4), ("1", None), ("CMYK", 3)):
        image = pil.fromarray(picture).convert(mode)
        converted = ss.Image(image).array
        expected = np.asarray(image.convert({3: "RGB", 4: "RGBA", None: "L"}[channels]))
        assert np.array_equal(converted, expected), mode


# -- records -------------------------------------------------------------------------------

text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=5)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
odd_values = st.sampled_from(
    [
        b"x",
        object(),
        frozenset({"a"}),
        (1, "a"),
        np.float32(0.5),
        np.arange(3),
        np.int64(7),
        np.bool_(False),
        1 + 2j,
        datetime.date(2020, 1, 1),
        np.datetime64("2020-01-01"),
        Decimal("1.5"),
        {3: "int field name"},
    ]
)
field_names = st.one_of(text, st.sampled_from(["step", "a"]), st.integers(-1, 1), st.none())
records = st.dictionaries(
    field_names, st.one_of(json_values, odd_values, st.lists(odd_values, max_size=2)), max_size=4
)
bad_keys = st.sampled_from([None, 3, ("a",), "", " r", "r\x00", "r\ud800", "r" * 1100])


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


class RefusedError(Exception):
    """The documented refusal of a record, with the text its message must contain."""


def plain(value: Any, where: str) -> Any:
    """What a record value is stored as (documented in ``Run.log_record``), or RefusedError."""
    if isinstance(value, str) and has_surrogate(value):
        raise RefusedError(f"{where} holds text {value!r} that is not valid Unicode")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if isinstance(name, str) and has_surrogate(name):
                raise RefusedError(f"{where} has field name {name!r} that is not valid Unicode")
            if not isinstance(name, str):
                raise RefusedError(f"{where} has field name {name!r}")
            out[name] = plain(item, f"{where}[{name!r}]")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "biuf":
        return plain(value.tolist(), where)
    raise RefusedError(f"{where} is ")


def same_json(got: Any, want: Any) -> bool:
    """Equality that tells 1 from 1.0 from True, -0.0 from 0.0 and matches NaN with NaN."""
    if isinstance(got, np.generic):
        got = got.item()
    if isinstance(want, float):
        return isinstance(got, float) and (
            (math.isnan(got) and math.isnan(want))
            or (got == want and math.copysign(1, got) == math.copysign(1, want))
        )
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same_json, got, want))
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and list(got) == list(want)
            and all(same_json(got[k], want[k]) for k in want)
        )
    return type(got) is type(want) and got == want


def test_records_round_trip_or_are_refused(run, store_path):
    kept: list[tuple[str, int, dict[str, Any]]] = []
    counter = iter(range(10**6))

    @FUZZ
    @given(record=records, key=st.one_of(st.none(), st.none(), st.none(), bad_keys))
    def example(record, key):
        key = f"r{next(counter)}" if key is None else key
        step, before = next(counter), run.step
        if not isinstance(key, str) or not key or key.strip() != key or len(key) > 1024:
            with pytest.raises(ss.InvalidValueError, match=re.escape(f"key {key!r:.41}")):
                run.log_record(key, record, step=step)
            assert run.step == before
            return
        if any(c in key for c in "\x00\ud800"):
            with pytest.raises(ss.InvalidValueError, match=re.escape(f"key {key!r}: ")):
                run.log_record(key, record, step=step)
            return
        try:
            if "step" in record:
                raise RefusedError("record field 'step' clashes with the step column")
            expected = plain(record, "record")
        except RefusedError as refusal:
            why = str(refusal)
            if not why.startswith("record field 'step'"):
                why = f"record is not JSON-serialisable: {why}"
            with pytest.raises(ss.InvalidValueError, match=re.escape(f"key {key!r}: {why}")):
                run.log_record(key, record, step=step)
            assert run.step == before
            return
        run.log_record(key, record, step=step)
        kept.append((key, step, expected))
        run.flush()
        check_record(ss.open(store_path).run(run.id), *kept[-1])

    example()
    assert kept
    run.finish()
    view = ss.open(store_path).run(run.id)
    for key, step, expected in kept:
        check_record(view, key, step, expected)


def check_record(view: ss.RunView, key: str, step: int, expected: dict[str, Any]) -> None:
    frame = view.records(key)
    assert frame["step"].tolist() == [step]
    assert list(frame.columns) == ["step", *expected]
    for field, want in expected.items():
        assert same_json(frame[field].iloc[0], want), (key, field)


@pytest.mark.parametrize(
    "log",
    [
        lambda run: run.log({"loss\ud800": 1.0}),
        lambda run: run.log({"w\udfff": np.zeros(3)}),
        lambda run: run.log({"img\ud800": ss.Image(np.zeros((2, 2), np.uint8))}),
        lambda run: run.log_record("notes\ud800", {"a": 1}),
    ],
)
def test_keys_no_store_can_hold_are_refused_and_the_store_stays_readable(new_run, store_path, log):
    run = new_run()
    run.log({"loss": 0.5}, step=0)
    with pytest.raises(ss.InvalidValueError, match=r"not valid Unicode text \(surrogates"):
        log(run)
    run.finish()
    assert ss.open(store_path).run(run.id).scalars("loss")["value"].tolist() == [0.5]


def test_log_needs_a_dict_of_values(run):
    with pytest.raises(ss.InvalidArgumentError, match=r"values=\[\('loss', 1\.0\)\]: expected"):
        run.log([("loss", 1.0)])
    assert run.step == 0
