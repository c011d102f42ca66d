"""Distributed training: which rank this process is, and one run id shared by all ranks.

Rank and world size come from ``torch.distributed`` when it is initialised, else from the
``RANK`` and ``WORLD_SIZE`` environment variables that launchers (torchrun, SLURM scripts,
accelerate) set. All ranks share one run: its id is ``$STEPSTORE_RUN_ID`` when set, else
rank 0 creates it and broadcasts the id over ``torch.distributed``. Rank 0 records; the
other ranks get an :class:`IdleRun` whose calls do nothing, so the same training script
runs unchanged on every rank and no duplicate runs appear.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from typing import Any

from .errors import InvalidArgumentError

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when not distributed."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InvalidArgumentError(
            f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: "
            "expected integers"
        ) from None


def shared_run_id(rank: int, world: int) -> str:
    """The run id every rank uses: ``$STEPSTORE_RUN_ID``, or rank 0's broadcast over
    ``torch.distributed``."""
    given = os.environ.get("STEPSTORE_RUN_ID")
    if given:
        if not _RUN_ID.match(given):
            raise InvalidArgumentError(
                f"$STEPSTORE_RUN_ID={given!r}: expected 1-64 letters, digits, '_' or '-'"
            )
        return given
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_initialized():
        raise InvalidArgumentError(
            f"rank {rank} of {world}: the ranks cannot agree on a run id; set "
            "$STEPSTORE_RUN_ID to the same value on every rank, or initialise "
            "torch.distributed before stepstore.init()"
        )
    chosen: list[Any] = [secrets.token_hex(8) if rank == 0 else None]
    dist.broadcast_object_list(chosen, src=0)
    return str(chosen[0])
