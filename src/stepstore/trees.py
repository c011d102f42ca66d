"""Nested values (pytrees) given to ``Run.log``, flattened to one key per leaf.

``{"params": {"dense": {"kernel": w, "bias": b}}}`` records ``params/dense/kernel`` and
``params/dense/bias``. Dicts (any Mapping), lists and tuples are nodes; a named tuple's
children are named by their fields; JAX pytree nodes of other types (Flax structs, Optax
states, registered dataclasses) are flattened by ``jax.tree_util`` when JAX is already
imported. Everything else,
and a list of ``Image``, is a leaf.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .errors import InvalidValueError
from .tensors.images import Image

#: Leaf types never handed to ``jax.tree_util``.
_PLAIN = (int, float, complex, str, bytes, Image, np.generic)


def flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every nested node replaced by its leaves under ``key/child`` keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        for leaf_key, leaf in _leaves(key, value):
            if leaf_key in flat:
                raise InvalidValueError(
                    f"key {leaf_key!r} is given twice in one log() call (once as a nested "
                    "path); each key takes one value per call"
                )
            flat[leaf_key] = leaf
    return flat


def _leaves(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    children = _children(key, value)
    if children is None:
        yield key, value
        return
    if not children:
        raise InvalidValueError(
            f"key {key!r}: an empty {type(value).__name__} has no value to record; expected "
            "a number, an array, an Image or a dict/list holding them"
        )
    for name, child in children:
        yield from _leaves(f"{key}/{name}", child)


def _children(key: str, value: Any) -> list[tuple[str, Any]] | None:
    """A node's (name, child) pairs, or None for a leaf."""
    if isinstance(value, Mapping):
        return [(_child_name(key, name), child) for name, child in value.items()]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return list(zip(value._fields, value, strict=True))
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, Image) for v in value):
            return None  # an image batch is one value
        return [(str(i), child) for i, child in enumerate(value)]
    if "jax" in sys.modules and not isinstance(value, _PLAIN) and not hasattr(value, "ndim"):
        return _jax_children(value)
    return None


def _child_name(key: str, name: Any) -> str:
    if isinstance(name, str):
        return name
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        return str(int(name))
    raise InvalidValueError(
        f"key {key!r}: a nested dict key must be a str or an int; got {name!r} of type "
        f"{type(name).__name__}"
    )


def _jax_children(value: Any) -> list[tuple[str, Any]] | None:
    """The children of a registered JAX pytree node (one level), or None for a leaf."""
    import jax

    children, _ = jax.tree_util.tree_flatten_with_path(
        value, is_leaf=lambda node: node is not value
    )
    if len(children) == 1 and children[0][1] is value:
        return None
    return [(_path_name(path[0]), child) for path, child in children]


def _path_name(entry: Any) -> str:
    """A JAX key-path entry's name: a dict key, a sequence index or an attribute."""
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)
