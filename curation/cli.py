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
import contextlib
import importlib
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

__all__ = ["COMMANDS", "HelpFormatter", "build_parser", "main", "version"]

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
    "report": "one self-contained HTML page: funnel, plots, galleries with boxes drawn, rejects, config",
}

EPILOG = """examples:
  curate demo                                   the whole flow offline, then: curate report demo-out
  curate download urls.parquet --out raw
  curate filter raw --out filtered --clip-model ViT-B-32 --clip-pretrained laion2b_s34b_b79k
  curate build filtered --out samples --format qwen-vl --pack 2048
  curate sql samples "select task, count(*) from samples group by task"
  curate report samples --out report.html

`curate COMMAND --help` shows each command's options and examples."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their lines; an option's help ends with its default unless the text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
        ):
            return text
        return f"{text} (default %(default)s)"


# commands that run pipelines (Ray, img2dataset): their third-party output goes to OUT/.curate/logs/ unless -v
QUIET_COMMANDS = ("demo", "run", "download", "ingest", "filter", "build")


@contextlib.contextmanager
def _third_party_output(args: argparse.Namespace):
    """Unless -v: fds 1 and 2 to a log while the command runs, kept as OUT/.curate/logs/third-party.log."""
    if args.verbose or args.command not in QUIET_COMMANDS:
        yield
        return
    from curation.console import LOG_NAME, third_party_to_log

    # an anonymous file (unlinked at once, so a killed run leaves nothing in the temporary folder), copied into
    # OUT/.curate/logs/ at the end: OUT is not written before the command has checked it
    fd, tmp = tempfile.mkstemp(prefix="curate-third-party-", suffix=".log")
    os.unlink(tmp)
    try:
        with third_party_to_log(fd):
            yield
    finally:
        out = getattr(args, "out", None)
        own = Path(out) / ".curate" if out else None
        if own is not None and own.is_dir():
            (own / "logs").mkdir(exist_ok=True)
            with open(own / "logs" / LOG_NAME, "wb") as dest:
                os.lseek(fd, 0, os.SEEK_SET)
                while chunk := os.read(fd, 1 << 20):
                    dest.write(chunk)
        os.close(fd)


def _module(name: str):
    return importlib.import_module(f"curation.commands.{name.replace('-', '_')}")


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("qwen-vl-curation")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout that is not installed
        return "unknown"


def build_parser(argv: list[str], every_command: bool = False) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (its options are needed to parse),
    or every command's with `every_command` (the help test walks them all)."""
    parser = argparse.ArgumentParser(
        prog="curate", description="Build Qwen-VL training data, and audit every step of it.",
        epilog=EPILOG, formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="debug logging and tracebacks; third-party output (img2dataset, Ray) on the terminal instead of OUT/.curate/logs/",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        if every_command or name == chosen:
            module = _module(name)
            p = sub.add_parser(
                name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                epilog=getattr(module, "EXAMPLES", None),
            )
            module.add_arguments(p)
        else:
            sub.add_parser(name, help=help_text, description=help_text)
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
        with _third_party_output(args):
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


def entry() -> None:
    """The `curate` command: `main`, then a quick exit (`exit_now`)."""
    exit_now(main())


def exit_now(rc: int) -> None:
    """End the process with `rc` once output is flushed and the atexit handlers (Ray's shutdown among
    them) have run, without tearing down every module one by one: with torch loaded that teardown
    alone takes 0.5-0.7 s, a tenth of a small job."""
    import atexit

    if "ray" in sys.modules:
        from curation.runner import stop_ray

        stop_ray()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


if __name__ == "__main__":  # pragma: no cover
    entry()
