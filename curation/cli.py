"""`curate`: the command line.

Each command lives in `curation/commands/<name>.py` with `add_arguments(parser)`
and `run(args) -> int`; this module only dispatches, importing a command's
module when it runs, so `curate preview` does not pay for Ray or torch.
Bad input raises InputError (`curation.errors`) and becomes one line on stderr
with exit status 2; any other exception is a bug: its traceback is printed and
the exit status is 1. With `-v` every error also prints its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

__all__ = ["COMMANDS", "main"]

# name -> one-line help; module = curation.commands.<name with - as _>
COMMANDS: dict[str, str] = {
    "demo": "the whole flow offline on a generated demo corpus served from loopback",
    "run": "a whole job from a TOML config (jobs/configs/*.toml)",
    "download": "URL list (parquet, csv, tsv, jsonl) -> records, through img2dataset",
    "ingest": "annotation files (COCO, Visual Genome, ...) or img2dataset shards -> records",
    "filter": "measure and decide: basic checks and CLIP score",
    "dedup": "drop duplicate records: same image bytes or URL, perceptual near-duplicates, eval-set overlap",
    "sql": "DuckDB SQL over a dataset directory (views records, samples, rejects)",
    "build": "records -> Qwen-VL / Qwen2-VL / Qwen2.5-VL samples (and packed sequences with --pack N)",
    "preview": "canonical records as JSON lines on stdin -> samples as JSON lines on stdout",
    "validate": "reparse samples: tag grammar, box ranges, image keys, token counts, packed sequences",
    "export": "samples -> qwen-vl-json, llama-factory or ms-swift JSON with the images beside it",
}


def _module(name: str):
    return importlib.import_module(f"curation.commands.{name.replace('-', '_')}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description="Build Qwen-VL training data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported (its options are needed to parse).
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s" if not args.verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.command:
        parser.print_help()
        return 2
    from curation.errors import InputError

    try:
        return int(_module(args.command).run(args) or 0)
    except InputError as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"curate {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curate {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`curate sql ... | head`): nothing went wrong here.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except Exception as exc:  # noqa: BLE001 - not bad input: a bug, shown whole
        traceback.print_exc(file=sys.stderr)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"curate {args.command}: internal error (a bug, not bad input): {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
