"""The `curate` commands, one module each (dispatched by `curation.cli`), and the checks they share.

A command checks its options here, before any work, so that a wrong option
is an InputError (one line, exit 2) rather than a failure half-way through.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from curation.errors import InputError

__all__ = ["add_output_arguments", "add_fetch_arguments", "fetch_settings", "check_out_dir", "check_positive"]


# commands whose --out may be on object storage (curation/storage/objects.py)
OBJECT_STORAGE_OUTPUTS = ("download", "build", "run", "filter", "dedup", "ingest")


def check_out_dir(path: str | os.PathLike, option: str = "--out", object_storage: bool = False) -> None:
    """InputError unless `path` is a directory, or can be made one, that this process may write; or, with
    `object_storage`, a filesystem URL (`s3://bucket/prefix`) whose kind is known."""
    from curation.storage.fs import filesystem, is_local

    if not is_local(str(path)):
        if not object_storage:
            raise InputError(f"{option} {path}: this command writes a local directory only (outputs on object "
                             f"storage: curate {', '.join(OBJECT_STORAGE_OUTPUTS)})")
        filesystem(str(path))  # an unknown protocol, or its library missing: one line
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {path}: exists and is not a directory")
    nearest = next(a for a in (p, *p.absolute().parents) if a.exists())
    if not nearest.is_dir():
        raise InputError(f"{option} {path}: {nearest} is not a directory")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {nearest} is not writable")


def check_positive(option: str, value: float | None) -> None:
    """InputError when an option that counts or sizes something is zero or negative."""
    if value is not None and value <= 0:
        raise InputError(f"{option} must be positive, got {value}")


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


def add_fetch_arguments(p: argparse.ArgumentParser, download: bool = True) -> None:
    """Options of every command that fetches URLs (curation/crawl/fetch.py); `download=False`: the policy options only."""
    from curation.crawl.fetch import DEFAULT_DISALLOWED_HEADER_DIRECTIVES, DEFAULT_USER_AGENT_TOKEN

    p.add_argument(
        "--allow-private-network", action="store_true",
        help="also fetch from loopback, private, link-local and other non-public addresses (refused by default)",
    )
    p.add_argument(
        "--user-agent-token", default=DEFAULT_USER_AGENT_TOKEN,
        help=f"the crawler's name: User-Agent TOKEN/VERSION (+CONTACT), and the TOKEN that 'X-Robots-Tag: TOKEN: noai' addresses (default {DEFAULT_USER_AGENT_TOKEN})",
    )
    p.add_argument(
        "--crawler-contact", default=None, metavar="URL",
        help="a page or address that tells site owners who crawls and how to opt out, sent in the User-Agent as (+URL)",
    )
    p.add_argument(
        "--disallowed-header-directives", default=",".join(DEFAULT_DISALLOWED_HEADER_DIRECTIVES), metavar="LIST",
        help=f"comma-separated X-Robots-Tag directives that forbid using an image; '' honours none (default {','.join(DEFAULT_DISALLOWED_HEADER_DIRECTIVES)})",
    )
    if download:
        p.add_argument("--max-per-host", type=int, default=4, help="requests in flight per host in one shard's download")
        p.add_argument("--retries", type=int, default=2, help="retries on 429, 5xx, timeouts and resets, with exponential backoff honouring Retry-After")


def fetch_settings(args: argparse.Namespace) -> dict:
    """The fetch options given to a command, as WebPairsConfig keys."""
    settings = {
        "allow_private_network": args.allow_private_network,
        "user_agent_token": args.user_agent_token,
        "crawler_contact": args.crawler_contact,
        "disallowed_header_directives": tuple(d.strip() for d in args.disallowed_header_directives.split(",") if d.strip()),
    }
    for key in ("max_per_host", "retries"):
        if hasattr(args, key):
            settings[key] = getattr(args, key)
    return settings
