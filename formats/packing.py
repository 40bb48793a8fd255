"""Packing: samples of the same task into sequences of at most N tokens.

Spec section 4, stage 2. A pure function over (sample_id, task, num_tokens)
triples: best-fit decreasing per task (largest samples first, each into the
fullest sequence it still fits), which is deterministic whatever order the
samples arrive in. Each sequence records its members' token offsets. A sample
longer than N is never truncated: `pack_sequences` raises ValueError on it
(the build stage rejects such samples with reason `too_long` before packing).

A sequence's id is the hex of an 8-byte BLAKE2b digest of its task's UTF-8
bytes followed, for each member in order, by the byte 0x1f and the member's
sample id: the same task and members always give the same id.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["DEFAULT_PACK", "Packed", "pack_sequences", "fill_ratio", "sequences_table"]

DEFAULT_PACK = 2048


@dataclass(frozen=True)
class Packed:
    sequence_id: str
    task: str
    sample_ids: tuple[str, ...]
    offsets: tuple[int, ...]
    num_tokens: int


def _sequence_id(task: str, ids: Sequence[str]) -> str:
    h = hashlib.blake2b(task.encode(), digest_size=8)
    for i in ids:
        h.update(b"\x1f" + i.encode())
    return h.hexdigest()


def pack_sequences(items: Iterable[tuple[str, str, int]], max_tokens: int = DEFAULT_PACK) -> list[Packed]:
    """(sample_id, task, num_tokens) -> sequences of one task, each <= max_tokens."""
    if max_tokens <= 0:
        raise ValueError(f"pack size must be positive, got {max_tokens}")
    by_task: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for sid, task, n in items:
        if n is None or n <= 0:
            raise ValueError(f"sample {sid}: num_tokens must be positive, got {n}")
        if n > max_tokens:
            raise ValueError(f"sample {sid} has {n} tokens > pack size {max_tokens}; reject it, never truncate")
        by_task[task].append((n, sid))
    out: list[Packed] = []
    for task in sorted(by_task):
        members: list[list[tuple[str, int]]] = []
        used: list[int] = []
        free: list[tuple[int, int]] = []  # (remaining tokens, sequence index), sorted
        for n, sid in sorted(by_task[task], key=lambda t: (-t[0], t[1])):
            j = bisect.bisect_left(free, (n, -1))
            if j < len(free):
                _, k = free.pop(j)
            else:
                k = len(members)
                members.append([])
                used.append(0)
            members[k].append((sid, used[k]))
            used[k] += n
            if used[k] < max_tokens:
                bisect.insort(free, (max_tokens - used[k], k))
        for k, mem in enumerate(members):
            ids = tuple(s for s, _ in mem)
            out.append(Packed(_sequence_id(task, ids), task, ids, tuple(o for _, o in mem), used[k]))
    return out


def fill_ratio(sequences: Sequence[Packed], max_tokens: int) -> float:
    """Tokens used / tokens available over all sequences (1.0 = no padding)."""
    if not sequences:
        return 0.0
    return sum(s.num_tokens for s in sequences) / (len(sequences) * max_tokens)


def sequences_table(sequences: Sequence[Packed], fmt: str):
    """The sequences as a SEQUENCE_SCHEMA table."""
    import pyarrow as pa

    from curation.schema import SEQUENCE_SCHEMA

    return pa.table(
        {
            "sequence_id": [s.sequence_id for s in sequences],
            "task": [s.task for s in sequences],
            "format": [fmt] * len(sequences),
            "sample_ids": [list(s.sample_ids) for s in sequences],
            "offsets": [list(s.offsets) for s in sequences],
            "num_tokens": [s.num_tokens for s in sequences],
        },
        schema=SEQUENCE_SCHEMA,
    )
