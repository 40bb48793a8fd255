"""The `curate` commands: one module each, with `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse

__all__ = ["add_output_arguments"]


def add_output_arguments(p: argparse.ArgumentParser, verify: bool = True) -> None:
    """Options of every command that writes a dataset directory (and reads one with `verify`)."""
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace a non-empty output directory; the old dataset stays until the new one is complete",
    )
    p.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run into this output with the same settings: finished input shards are skipped",
    )
    if verify:
        p.add_argument("--verify", action="store_true", help="check every input shard's sha256 against its manifest first")
