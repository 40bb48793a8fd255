"""`curate validate DIR`: check every shard's sha256, reparse every sample, recount tokens, check image keys.

Prints one line per problem, `SAMPLE_ID: message` (sequences: `SEQUENCE_ID:`,
shards that differ from the manifest: `TABLE/part-N.parquet:`),
then a summary; exits 1 when there is any problem, 2 on unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import IO, Iterator

from curation.errors import InputError

__all__ = ["add_arguments", "run", "validate_dataset"]

EXAMPLES = """examples:
  curate validate demo-out
  curate validate samples --max-problems 20"""

_COLUMNS = ["sample_id", "task", "format", "prompt", "target", "conversations", "images", "num_tokens"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="dataset directory with samples")
    p.add_argument("--max-problems", type=int, default=1000, help="stop printing problems after this many (all are counted)")


def validate_dataset(path: str) -> Iterator[tuple[str, str]]:
    """(sample or sequence id, problem) for every problem in the dataset at `path`."""
    import pyarrow as pa

    from curation.storage.dataset import Dataset, ShardError
    from curation.schema import SAMPLE_SCHEMA, conform
    from formats.grammar import check_sample

    ds = Dataset(path)
    # every shard of every table against its manifest entry (rows, sha256) before
    # anything is read from them: a damaged dataset is reported, not reparsed
    damaged = False
    for table in ds.tables():
        for shard in ds.shards(table):
            try:
                ds.verify_shard(shard)
            except ShardError as exc:
                damaged = True
                yield shard["path"], str(exc)
    if damaged:
        return
    if "samples" not in ds.tables():
        raise InputError(f"{path}: the manifest lists no samples table")
    seen: dict[str, tuple[str, int]] = {}
    build = ds.manifest.get("build") or {}  # the pixel limits the samples were built with (Qwen2 formats)
    limits = {k: build[k] for k in ("min_pixels", "max_pixels") if build.get(k)}
    for rb in ds.iter_batches("samples", batch_size=1024):
        table = pa.Table.from_batches([rb])
        try:
            conform(table, SAMPLE_SCHEMA)
        except ValueError as exc:
            yield "(schema)", str(exc)
        for row in table.select([c for c in _COLUMNS if c in table.column_names]).to_pylist():
            sid = row.get("sample_id") or "(no sample_id)"
            if sid in seen:
                yield sid, "duplicate sample_id"
            seen[sid] = (row.get("task"), row.get("num_tokens") or 0)
            for problem in check_sample(row, **limits):
                yield sid, problem
    for shard in ds.shards("images"):  # images stored once: once per part (a sample's missing key is found above)
        from curation.storage.fs import read_parquet

        counts = Counter(read_parquet(str(ds.file(shard["path"])), columns=["key"]).column(0).to_pylist())
        for key, n in counts.items():
            if n > 1:
                yield shard["path"], f"image key {key!r} stored {n} times"
    limit = (ds.manifest.get("packing") or {}).get("max_tokens")
    for rb in ds.iter_batches("sequences", batch_size=4096):
        for seq in rb.to_pylist():
            yield from ((seq["sequence_id"], p) for p in _check_sequence(seq, seen, limit))


def _check_sequence(seq: dict, samples: dict[str, tuple[str, int]], limit: int | None) -> list[str]:
    problems = []
    if limit is not None and seq["num_tokens"] > limit:
        problems.append(f"sequence has {seq['num_tokens']} tokens > pack size {limit}")
    pos = 0
    for sid, off in zip(seq["sample_ids"], seq["offsets"]):
        if sid not in samples:
            problems.append(f"member {sid} is not in samples")
            continue
        task, n = samples[sid]
        if task != seq["task"]:
            problems.append(f"member {sid} has task {task!r}, sequence has {seq['task']!r}")
        if off != pos:
            problems.append(f"member {sid} at offset {off}, expected {pos}")
        pos = off + n
    if not problems and pos != seq["num_tokens"]:
        problems.append(f"num_tokens {seq['num_tokens']} != {pos} summed over members")
    return problems


def run(args: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout or sys.stdout
    count = 0
    for sid, problem in validate_dataset(args.dir):
        count += 1
        if count <= args.max_problems:
            out.write(f"{sid}: {problem}\n")
    from curation.storage.dataset import Dataset

    ds = Dataset(args.dir)
    summary = f"validate: {ds.rows('samples')} samples, {ds.rows('sequences')} sequences, {count} problems"
    out.write(summary + "\n")
    return 1 if count else 0
