"""Job piece: records → samples of one format (and packed sequences), as pipeline steps.

Used by `curate build` (records of another dataset directory) and by the
web-pairs job (its own records, in the same pass as download and filters).
Packing happens per input shard, inside the shard's task, so nothing about
every sample ever comes back to the driver.
"""

from __future__ import annotations

import logging
from typing import Sequence

from curation.runner import Sink

__all__ = ["LOCAL_MAX_ROWS", "build_steps", "build_extra"]

log = logging.getLogger(__name__)

# at most this many records run in-process under runner "auto"; more go through Ray
LOCAL_MAX_ROWS = 50_000


def build_steps(
    format: str = "qwen-vl",
    tasks: str | Sequence[str] | None = None,
    pack: int | None = None,
    rounding: str = "half_up",
    batch_size: int = 512,
) -> list:
    """[BuildSamples, Sink(samples)]; a bad format or task list raises ValueError here."""
    from formats.build import BuildSamples

    stage = BuildSamples(format=format, tasks=tasks, rounding=rounding, max_tokens=pack)
    stage.batch_size = batch_size
    return [stage, Sink("samples", pack=pack, format=format)]


def build_extra(writer, summary: dict, steps: list, runner: str) -> dict:
    """The manifest's `build` (and `packing`) sections from the runner's merged shard results."""
    stage, sink = steps
    records = writer.stage("build").rows_in
    extra: dict = {
        "build": {"records": records, "format": stage.format, "tasks": list(stage.tasks), "runner": runner,
                  "samples_by_task": summary["samples_by_task"]}
    }
    if sink.pack is not None:
        per_task = {}
        seqs = samples = tokens = 0
        for task, t in summary["packing"].items():
            per_task[task] = {"sequences": t["sequences"], "samples": t["samples"],
                              "fill_ratio": round(t["tokens"] / (t["sequences"] * sink.pack), 4) if t["sequences"] else 0.0}
            seqs, samples, tokens = seqs + t["sequences"], samples + t["samples"], tokens + t["tokens"]
        extra["packing"] = {"max_tokens": sink.pack, "sequences": seqs, "samples": samples,
                            "fill_ratio": round(tokens / (seqs * sink.pack), 4) if seqs else 0.0, "by_task": per_task}
    return extra
