"""A dataset written to object storage (`--out s3://bucket/prefix`, any fsspec filesystem).

Object stores have no rename, so the local scheme (a staging folder swapped in
by renames) becomes one of prefixes and a manifest that is the commit point:

    OUT/manifest.json                  the dataset: it lists its shards, and a reader trusts nothing else
    OUT/README.md                      the dataset card
    OUT/runs/RUN/records/part-K.parquet ...   the shards of run RUN (RUN: UTC time + random), written by
                                       the shard tasks straight to their keys (an upload is whole or absent)
    OUT/runs/RUN/done/K.json           input shard K is finished (resume); removed at the swap
    OUT/.curate/current.json           the run in progress: its id and config (what --resume continues)
    OUT/.curate/lock                   the run that holds the output

The swap is one PUT of `OUT/manifest.json` naming the new run's shards; only
then are the old run's objects deleted. A run killed at any point leaves the
old manifest and every object it lists in place, so the old dataset stays
readable; `--resume` continues the run that `current.json` names.

The lock is created only if absent: a conditional PUT (`If-None-Match: *`,
which S3 has honoured since 2024, and moto, MinIO and GCS's `ifGenerationMatch`
too) through fsspec's `pipe_file(mode="create")`. Its holder rewrites it every
`LOCK_STALE_S / 4` seconds; a lock not rewritten for `LOCK_STALE_S` (default
120, `CURATE_LOCK_STALE_S`) is a killed run's and is taken over, at once when
its holder was a process of this host that is gone. On a store without
conditional writes the lock is a plain check-then-write (a warning says so):
two runs started within the same second could both take it.

Nothing of the data passes through the driver: it writes only the small JSON
objects above, and reads the tasks' results.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterator, Mapping

from curation.errors import InputError
from curation.storage import fs as storage
from curation.storage.dataset import CURATE_DIR, MANIFEST, DatasetWriter, OutputError, DEFAULT_SHARD_BYTES

__all__ = ["ObjectDatasetWriter", "open_writer", "LOCK_STALE_S", "RUNS_DIR"]

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
LOCK_STALE_S = float(os.environ.get("CURATE_LOCK_STALE_S", "120"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ObjectLock:
    """OUT/.curate/lock on an object store (see the module's docstring)."""

    def __init__(self, url: str, out: str):
        self.url, self.out = url, out
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        if not self._create():
            held = self._held()
            if held is not None and not self._stale(held):
                raise OutputError(
                    f"{out}: in use by another curate run (host {held.get('host')}, pid {held.get('pid')}, last heard "
                    f"{time.time() - float(held.get('heartbeat', 0)):.0f} s ago); wait for it or stop it (the lock of a "
                    f"killed run is taken over after {LOCK_STALE_S:.0f} s)")
            log.warning("%s: taking over the lock of a run that is gone (host %s, pid %s)", out,
                        held and held.get("host"), held and held.get("pid"))
            storage.remove(url)
            if not self._create():
                raise OutputError(f"{out}: another curate run took the output just now; wait for it or stop it")
        self._thread = threading.Thread(target=self._beat, name="curate-lock-heartbeat", daemon=True)
        self._thread.start()

    def _payload(self) -> bytes:
        import json

        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "heartbeat": time.time()}).encode()

    def _create(self) -> bool:
        try:
            return storage.create_exclusive(self.url, self._payload())
        except NotImplementedError:
            log.warning("%s: this store has no conditional create; the lock is a check, then a write", self.out)
            if storage.exists(self.url):
                return False
            storage.write_bytes(self.url, self._payload())
            return True

    def _held(self) -> dict | None:
        try:
            return storage.read_json(self.url)
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _stale(held: dict) -> bool:
        if time.time() - float(held.get("heartbeat", 0)) > LOCK_STALE_S:
            return True
        return held.get("host") == socket.gethostname() and not _alive(int(held.get("pid", 0)))

    def _beat(self) -> None:
        while not self._stop.wait(max(1.0, LOCK_STALE_S / 4)):
            held = self._held()
            if held is None or held.get("token") != self.token:
                log.error("%s: the output's lock was taken by another run", self.out)
                return
            try:
                storage.write_bytes(self.url, self._payload())
            except OSError as exc:  # a missed beat is not fatal; many are (the lock goes stale)
                log.warning("%s: could not renew the lock: %s", self.out, exc)

    def release(self) -> None:
        self._stop.set()
        held = self._held()
        if held is not None and held.get("token") == self.token:
            storage.remove(self.url)


class ObjectDatasetWriter(DatasetWriter):
    """`DatasetWriter` for an output on object storage: the same rules (a non-empty output refused without
    `overwrite`, the old dataset untouched until the new one is complete, `resume`), other means."""

    def __init__(
        self,
        out: str,
        target_shard_bytes: int = DEFAULT_SHARD_BYTES,
        overwrite: bool = False,
        inputs: tuple = (),
        resume: bool = False,
        config: Mapping[str, Any] | None = None,
    ):
        if target_shard_bytes <= 0:
            raise InputError(f"target shard size must be positive, got {target_shard_bytes}")
        self.out = str(out).rstrip("/")
        for inp in inputs:
            i = str(inp).rstrip("/")
            if i == self.out or i.startswith(self.out + "/") or self.out.startswith(i + "/"):
                raise OutputError(f"{out}: the output is, holds or lies inside the input {inp}; write to another prefix")
        fs, root = storage.filesystem(self.out)
        self._check_bucket(fs, root)
        self.own = storage.join(self.out, CURATE_DIR)
        self._made = []
        self._lock = _ObjectLock(storage.join(self.own, "lock"), self.out)
        try:
            others = sorted(os.path.basename(p.rstrip("/")) for p in self._entries(fs, root))
            others = [o for o in others if o != CURATE_DIR]
            if others and not overwrite:
                shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
                raise OutputError(f"{self.out}: output is not empty ({shown}); pass --overwrite to replace it "
                                  "(the old dataset stays until the new one is complete)")
            current = self._current()
            self.resumed = bool(resume and current is not None and self._same_config(current, config))
            if current is not None and not self.resumed:  # what a failed or killed run of ours left: gone
                storage.remove(storage.join(self.out, RUNS_DIR, current["run"]), recursive=True)
            self.run = current["run"] if self.resumed else time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
            self.prefix = f"{RUNS_DIR}/{self.run}/"
            self.staging = storage.join(self.out, RUNS_DIR, self.run)
            if self.resumed:  # shards the interrupted run's driver wrote: redone (names restart at 0)
                from curation.storage.dataset import DRIVER_PREFIX, TABLE_SCHEMAS

                fs_run, run_root = storage.filesystem(self.staging)
                stale = [p for t in TABLE_SCHEMAS for p in fs_run.glob(f"{run_root}/{t}/{DRIVER_PREFIX}*")]
                if stale:
                    fs_run.rm(stale)
            storage.write_json(storage.join(self.own, "current.json"), {"run": self.run, "config": dict(config or {})})
        except BaseException:
            self._lock.release()
            raise
        self.target_shard_bytes = target_shard_bytes
        self.writers = {}
        self.stages = {}
        self.timings = {}
        self.started = time.time()
        self.closed = False

    @staticmethod
    def _entries(fs, root: str) -> list[str]:
        try:
            return [e["name"] for e in fs.ls(root, detail=True)]
        except FileNotFoundError:
            return []

    def _check_bucket(self, fs, root: str) -> None:
        bucket = root.split("/", 1)[0]
        try:
            if not fs.exists(bucket):
                raise OutputError(f"{self.out}: no such bucket {bucket!r}")
        except OutputError:
            raise
        except Exception as exc:
            raise OutputError(storage.describe_error(self.out, exc)) from None

    def _current(self) -> dict | None:
        try:
            return storage.read_json(storage.join(self.own, "current.json"))
        except (FileNotFoundError, ValueError):
            return None

    def _same_config(self, current: dict, config: Mapping[str, Any] | None) -> bool:
        import json

        before = current.get("config") or {}
        now = json.loads(json.dumps(dict(config or {}), default=str))
        differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if differ:
            raise OutputError(f"{self.out}: --resume with a different config than the interrupted run's (keys: "
                              f"{', '.join(differ)}); rerun with the same settings, or without --resume to start over")
        return True

    # ------------------------------------------------ the run's shards

    def _done_dir(self) -> str:
        return storage.join(self.staging, "done")

    def done_shards(self) -> set[int]:
        return {int(os.path.basename(p).split(".")[0]) for p in storage.listdir(self._done_dir()) if p.endswith(".json")}

    def done_inputs(self) -> dict[int, dict | None]:
        return {int(r["shard_id"]): r.get("input") for r in self.shard_results()}

    def add_shard(self, result: Mapping[str, Any]) -> None:
        storage.write_json(storage.join(self._done_dir(), f"{int(result['shard_id']):05d}.json"), dict(result))

    def shard_results(self) -> Iterator[dict]:
        import json

        paths = [p for p in storage.listdir(self._done_dir()) if p.endswith(".json")]
        if not paths:
            return
        fs, _ = storage.filesystem(self.staging)
        got = fs.cat([storage.filesystem(p)[1] for p in paths])  # concurrent GETs (s3fs), not one by one
        for key in sorted(got):
            yield json.loads(got[key])

    @property
    def work_dir(self) -> str:
        """A prefix for this run's working files (decisions, centroids), that every node reads; gone at the swap."""
        return storage.join(self.staging, "work")

    def writer(self, table: str):
        from curation.storage.dataset import DRIVER_PREFIX, ShardWriter

        if table not in self.writers:
            self.writers[table] = ShardWriter(self.staging, table, target_bytes=self.target_shard_bytes, prefix=DRIVER_PREFIX)
        return self.writers[table]

    def adopt(self, source, table: str) -> None:
        """Take `table`'s shards of `source`, a dataset this run wrote under its own prefix (a first pass), into
        this output as they are: listed where they lie, nothing copied. Done once per run (a marker)."""
        marker = storage.join(self.staging, "adopted", f"{table}.json")
        if storage.exists(marker):
            return
        where = str(source.path).rstrip("/")
        if not where.startswith(self.staging + "/"):
            raise OutputError(f"{where}: only a dataset under this run's prefix can be adopted")
        rel = where[len(self.staging) + 1:]
        source.shard_paths(table)  # each listed shard present, with its rows and size
        storage.write_json(marker, {"table": table, "files": [{**s, "path": f"{rel}/{s['path']}"} for s in source.shards(table)]})

    def _adopted(self) -> Iterator[dict]:
        for url in storage.listdir(storage.join(self.staging, "adopted")):
            if url.endswith(".json"):
                yield storage.read_json(url)

    # ------------------------------------------------ the end

    def abort(self) -> None:
        """Give up this run: release the lock; the old dataset and this run's objects (for --resume) stay."""
        self.closed = True
        self._lock.release()

    def discard(self) -> None:
        """Give up a run that finished no shard: its objects and its current.json go."""
        storage.remove(self.staging, recursive=True)
        storage.remove(storage.join(self.own, "current.json"))
        self.abort()

    def close(self, config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict:
        """The manifest, PUT over the old one (the swap); then the old run's objects and this run's markers go."""
        import json

        manifest = self._manifest(config, extra, prefix=self.prefix)
        manifest["output"] = {"url": self.out, "run": self.run}
        self._write_card(manifest)
        storage.write_bytes(storage.join(self.out, MANIFEST), json.dumps(manifest, indent=2, default=str).encode())
        # after the swap: every object under runs/ that the new manifest does not list (the old runs, this
        # run's markers, work files, first pass, duplicate index), and this run's current.json
        listed = {storage.join(self.out, s["path"]) for info in manifest["tables"].values() for s in info["shards"]}
        fs, root = storage.filesystem(self.out)
        runs = storage.join(root, RUNS_DIR)
        gone = [p for p in (fs.find(runs) if fs.exists(runs) else []) if storage.join(self.out, p[len(root) + 1:]) not in listed]
        if gone:
            fs.rm(gone)
        storage.remove(storage.join(self.own, "current.json"))
        self.closed = True
        self._lock.release()
        return manifest

    def _write_card(self, manifest: dict) -> None:
        from curation.card import CARD, MARKER, render_card

        url = storage.join(self.out, CARD)
        try:
            with storage.open_file(url, "rb") as f:
                ours = MARKER in f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            ours = True
        if not ours:
            log.warning("%s: a README.md this tool did not write is there; the dataset card is not written", self.out)
            return
        storage.write_bytes(url, render_card(manifest, self.out).encode("utf-8"))


def open_writer(out, **kwargs) -> DatasetWriter:
    """The writer of an output: a local directory (`DatasetWriter`) or a prefix on object storage."""
    if storage.is_local(str(out)):
        return DatasetWriter(out, **kwargs)
    return ObjectDatasetWriter(str(out), **kwargs)
