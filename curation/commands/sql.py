"""`curate sql DIR "SELECT ..." [--csv]`: DuckDB over a dataset directory."""

from __future__ import annotations

import argparse
import csv
import sys

from curation.audit import query

__all__ = ["add_arguments", "run", "format_table"]

EXAMPLES = """examples:
  curate sql demo-out "select stage, reason, count(*) from rejects group by all"
  curate sql demo-out "select task, count(*), avg(num_tokens) from samples group by task" --csv
  curate sql demo-out "select r.* from records r join read_csv('labels.csv') l using (record_id)" --allow-path labels.csv"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="dataset directory (with manifest.json)")
    p.add_argument("sql", help="a query over the views records, samples, rejects (and sequences; images for samples built with --images-once)")
    p.add_argument("--csv", action="store_true", help="print CSV with a header")
    p.add_argument(
        "--allow-path", action="append", default=[], metavar="PATH",
        help="a file or directory the query may also read or write (repeatable); all else but the dataset's shards is refused",
    )


def format_table(cols: list[str], rows: list[tuple]) -> str:
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def _cell(v):
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    return v


def run(args: argparse.Namespace) -> int:
    cols, rows = query(args.dir, args.sql, allow=args.allow_path)
    rows = [tuple(_cell(v) for v in r) for r in rows]
    if args.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        w.writerows(rows)
    else:
        print(format_table(cols, rows))
    return 0
