"""Generated run names: ``adjective-noun-xxxx``, derived from the run id."""

from __future__ import annotations

import hashlib

_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "dapper",
    "eager",
    "fuzzy",
    "gentle",
    "hardy",
    "ivory",
    "jolly",
    "keen",
    "lucid",
    "mellow",
    "nimble",
    "olive",
    "proud",
    "quiet",
    "rapid",
    "sunny",
    "tidy",
    "vivid",
    "witty",
    "young",
    "zesty",
)
_NOUNS = (
    "otter",
    "falcon",
    "maple",
    "comet",
    "harbor",
    "lynx",
    "meadow",
    "nova",
    "orchid",
    "pebble",
    "quartz",
    "raven",
    "summit",
    "tundra",
    "willow",
    "zephyr",
    "badger",
    "cedar",
)


def new_name(run_id: str) -> str:
    """The name a run with id ``run_id`` gets when none is given (the same id, the same
    name), ending in the id's last four characters."""
    pick = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big")
    return (
        f"{_ADJECTIVES[pick % len(_ADJECTIVES)]}-{_NOUNS[pick // 97 % len(_NOUNS)]}-{run_id[-4:]}"
    )
