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

__all__ = ["LOCAL_MAX_ROWS", "DEFAULT_MIN_PIXELS", "DEFAULT_MAX_PIXELS", "check_pixel_limits", "build_steps", "build_extra"]

log = logging.getLogger(__name__)

# at most this many records run in-process under runner "auto"; more go through Ray
LOCAL_MAX_ROWS = 50_000
# Qwen2-VL / Qwen2.5-VL smart_resize limits: the model files' defaults (spec section 2)
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28


def check_pixel_limits(min_pixels: int, max_pixels: int) -> None:
    """ValueError unless 28*28 <= min_pixels <= max_pixels (smart_resize needs one 28x28 patch at least)."""
    for name, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 28 * 28:
            raise ValueError(f"{name} must be an integer of at least {28 * 28} (one 28x28 patch), got {v!r}")
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels {max_pixels} is below min_pixels {min_pixels}")


def build_steps(
    format: str = "qwen-vl",
    tasks: str | Sequence[str] | None = None,
    pack: int | None = None,
    rounding: str = "half_up",
    batch_size: int = 512,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    images_once: bool = False,
) -> list:
    """[BuildSamples, Sink(samples)]; a bad format, task list or pixel limit raises ValueError here.

    `images_once`: each image's bytes once per output shard in the `images` table, the samples referencing
    them by key (curation/image_table.py).

    `min_pixels` / `max_pixels`: the Qwen2-VL / Qwen2.5-VL smart_resize limits
    the samples are built at (image pad counts, Qwen2.5-VL boxes); recorded in
    the manifest's `build` section so that readers and exports resize alike.
    """
    from formats.build import BuildSamples

    check_pixel_limits(min_pixels, max_pixels)
    stage = BuildSamples(format=format, tasks=tasks, rounding=rounding, max_tokens=pack,
                         min_pixels=min_pixels, max_pixels=max_pixels)
    stage.batch_size = batch_size
    return [stage, Sink("samples", pack=pack, format=format, images_once=images_once)]


def build_extra(writer, summary: dict, steps: list, runner: str) -> dict:
    """The manifest's `build` (and `packing`) sections from the runner's merged shard results."""
    stage, sink = steps
    records = writer.stage("build").rows_in
    extra: dict = {
        "build": {"records": records, "format": stage.format, "tasks": list(stage.tasks), "runner": runner,
                  "min_pixels": stage.options.min_pixels, "max_pixels": stage.options.max_pixels,
                  "images_once": sink.images_once, "samples_by_task": summary["samples_by_task"]}
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
