"""`curate report DIR [--out report.html]`: one self-contained HTML page about a dataset."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]

EXAMPLES = """examples:
  curate report demo-out                          writes demo-out/report.html
  curate report samples --out /tmp/samples.html --per-task 8
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="dataset directory (with manifest.json)")
    p.add_argument("--out", default=None, metavar="FILE", help="the HTML file to write (default DIR/report.html)")
    p.add_argument("--per-task", type=int, default=4, help="samples shown per task in the galleries")


def run(args: argparse.Namespace) -> int:
    from curation.commands import check_positive
    from curation.report import write_report

    check_positive("--per-task", args.per_task)
    path, figures = write_report(args.dir, args.out, per_task=args.per_task)
    print(f"report: {path} ({figures['bytes'] / 1e6:.1f} MB, {figures['images']} plots and images, {figures['seconds']:.1f}s)")
    return 0
