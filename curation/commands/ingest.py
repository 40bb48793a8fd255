"""`curate ingest SOURCE [SOURCE ...] --kind KIND --out DIR [--images DIR]`

Annotation files (or img2dataset shards, or an image folder) -> canonical
records, with a reject row for everything that could not become part of one.

A source may name its own kind as `KIND=PATH`, so that several kinds about the
same images merge into one record per image:

    curate ingest coco-captions=captions_val2017.json coco-instances=instances_val2017.json \\
        --out coco-records --images val2017/

Flow: each importer streams its files into partial records and rejects; the
merger joins partials by record_id and validates them (stage `ingest`); the
records go to a working Parquet file, then through the `LoadImages` stage as a
Ray job (stage `images`), and `curation.runtime.collect` writes records and
rejects with the manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curation.commands import add_fetch_arguments, add_output_arguments
from curation.errors import InputError

__all__ = ["add_arguments", "run", "ingest", "parse_sources"]

EXAMPLES = """examples:
  curate ingest coco-captions=captions_val2017.json coco-instances=instances_val2017.json --images val2017/ --out coco
  curate ingest refs.p instances.json --kind refcoco --images train2014/ --out refcoco
  curate ingest region_descriptions.json image_data.json --kind vg-regions --out vg    annotations only"""

log = logging.getLogger(__name__)

WORK_FILE_ROWS = 20_000
# flush the working file earlier when records are rich (memory holds one file's rows)
WORK_FILE_ITEMS = 100_000
REJECT_BATCH = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from curation.importers import kinds
    from curation.images import DEFAULT_MAX_PIXELS

    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="annotation files, folders or shards; KIND=PATH gives one its own kind")
    parser.add_argument("--kind", help=f"kind of the sources without KIND= ({', '.join(kinds())}); required unless every source has KIND=")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--images", help="folder of the images (or a URL prefix), found by the file names the annotations give (default: annotations only, no image bytes)")
    parser.add_argument("--source", dest="source_name", help="dataset name in record ids SOURCE:ID (default per kind: coco, vg, textvqa, ...)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image accepted, in pixels (decompression bombs)")
    parser.add_argument("--runner", default="ray", choices=("ray", "local"), help="image side as a Ray job (default) or in this process (small inputs)")
    parser.add_argument("--ray-address", help="join a Ray cluster (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: every CPU of this machine)")
    add_fetch_arguments(parser, download=False)  # for --images URL-PREFIX
    add_output_arguments(parser, verify=False)


def parse_sources(sources: list[str], kind: str | None) -> dict[str, list[Path]]:
    """{kind: [paths]} from SOURCE arguments, `KIND=PATH` or plain paths of `kind`."""
    from curation.importers import IMPORTERS, get_importer
    from curation.storage.fs import as_path

    if kind is not None:
        get_importer(kind)  # a wrong --kind fails here, before any file is read
    groups: dict[str, list[Path]] = {}
    for s in sources:
        head, sep, tail = s.partition("=")
        if sep and head in IMPORTERS:
            groups.setdefault(head, []).append(as_path(tail))
        elif sep and not Path(s).exists() and "/" not in head:
            get_importer(head)  # KIND=PATH with an unknown kind
        elif kind is None:
            raise InputError(f"{s}: no kind; give --kind KIND or write the source as KIND={s}")
        else:
            groups.setdefault(kind, []).append(as_path(s))
    return groups


def is_url_prefix(images: str | None) -> bool:
    return bool(images) and images.split("://", 1)[0] in ("http", "https")


def _image_roots(images: str | None, importers: list) -> list[Path]:
    roots: list[Path] = []
    if images and not is_url_prefix(images):
        if "://" in images:
            raise InputError(f"--images {images}: only http(s) URL prefixes or local folders")
        root = Path(images)
        if not root.is_dir():
            raise InputError(f"--images {images}: no such folder")
        roots.append(root)
    for imp in importers:
        if imp.own_images and imp.folders:
            for p in imp.paths:
                if not isinstance(p, Path):  # a URL: its images come in the shards themselves (img2dataset)
                    if getattr(imp, "image_files", False):
                        raise InputError(f"{p}: kind {imp.kind} reads image files from local folders only")
                    continue
                if p.is_dir():
                    roots.append(p)
    return roots


class _WorkWriter:
    """Finished records (no image bytes yet, or img2dataset bytes) into working Parquet files."""

    def __init__(self, root: Path | str):
        from curation.importers.images import WORK_SCHEMA
        from curation.storage.fs import is_local

        self.root = str(root)  # a folder, or a prefix of the output's run on object storage
        self.schema = WORK_SCHEMA
        if is_local(self.root):
            Path(self.root).mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.refs: list[str | None] = []  # each row's first annotation reference, for an error message
        self.files: list[Path] = []
        self.count = 0
        self.items = 0

    def add(self, row: dict, items: int = 0, ref: str | None = None) -> None:
        self.rows.append(row)
        self.refs.append(ref)
        self.count += 1
        self.items += items
        if len(self.rows) >= WORK_FILE_ROWS or self.items >= WORK_FILE_ITEMS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        from curation.storage.fs import join, open_file

        path = join(self.root, f"work-{len(self.files):05d}.parquet")
        try:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self._bad_row(exc) from exc
        with open_file(path, "wb") as f:
            pq.write_table(table, f, row_group_size=1024)
        self.files.append(path)
        self.rows = []
        self.refs = []
        self.items = 0

    def _bad_row(self, exc: Exception) -> InputError:
        """The first row whose values do not fit the record columns (a width that is text, ...), named."""
        for row, ref in zip(self.rows, self.refs):
            try:
                pa.Table.from_pylist([row], schema=self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as bad:
                where = f" ({ref})" if ref else ""
                return InputError(f"record {row.get('record_id')}{where}: a value does not fit the record columns: {str(bad).splitlines()[0]}")
        return InputError(f"records do not fit the record columns: {str(exc).splitlines()[0]}")


def _fetch(files: list[Path], prefix: str, root: Path, max_pixels: int, policy) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Fetch each record's image from PREFIX/FILE_NAME through the download path.

    The same reader as `curate download` (img2dataset's engine through
    `curation.crawl.fetch`: address policy, user agent, opt-outs, per-host limits,
    retries), run in this process. A file name that is absolute or has a
    '..' part is refused before any request. Images land under `root` by the
    file name the annotation gives, so the image stage finds them as in a local
    folder. Returns ({record_id: url}, {record_id: error}, {record_id: reason})
    for the records whose image it tried or refused; `reason` only for refusals
    of the crawler's rules (`unsafe_file_name`, `blocked_address`, `opted_out`).
    """
    from urllib.parse import quote

    from curation.crawl.download import Img2datasetReader, download_reason
    from curation.crawl.netpolicy import unsafe_file_name
    from curation.reasons import BLOCKED_ADDRESS, OPTED_OUT, UNSAFE_FILE_NAME
    from curation.runner import InputShard

    ids, urls = [], []
    errors: dict[str, str] = {}
    reasons: dict[str, str] = {}
    name_of: dict[str, str] = {}
    for batch in _batches(files, columns=["record_id", "image", "image_files"]):
        for rid, image, names in zip(*(batch.column(c).to_pylist() for c in ("record_id", "image", "image_files"))):
            if image is None and names:
                problem = unsafe_file_name(names[0])
                if problem is not None:
                    errors[rid], reasons[rid] = problem, UNSAFE_FILE_NAME
                    continue
                ids.append(rid)
                urls.append(prefix.rstrip("/") + "/" + quote(names[0]))
                name_of[rid] = names[0]
    if not ids:
        return {}, errors, reasons
    work = root.parent / "download"
    work.mkdir(parents=True, exist_ok=True)
    url_file = work / "urls.parquet"
    pq.write_table(pa.table({"record_id": ids, "url": urls, "caption": pa.nulls(len(ids), pa.string())}), url_file)
    reader = Img2datasetReader(max_pixels=max_pixels, policy=policy)
    root = root.resolve()
    for b in reader(InputShard(0, str(url_file), None, len(ids), 0)):
        cols = b.column_names
        for rid, status, error, data in zip(*(b.column(c).to_pylist() if c in cols else [None] * b.num_rows
                                              for c in ("record_id", "status", "error_message", "jpg"))):
            if status != "success" or data is None:
                errors[rid] = (error or status or "no image").strip().splitlines()[0]
                reason = download_reason(errors[rid])
                if reason in (BLOCKED_ADDRESS, OPTED_OUT):
                    reasons[rid] = reason
                continue
            dest = (root / name_of[rid]).resolve()
            if not dest.is_relative_to(root):  # unsafe_file_name let it through: a bug, still never written
                errors[rid], reasons[rid] = f"file name {name_of[rid]!r} leaves the image folder", UNSAFE_FILE_NAME
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    shutil.rmtree(work, ignore_errors=True)
    return dict(zip(ids, urls)), errors, reasons


def _batches(files: list[Path], columns: list[str] | None = None) -> Iterator[pa.Table]:
    for path in files:
        for b in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=columns):
            yield pa.Table.from_batches([b])


def ingest(
    groups: dict[str, list[Path]],
    out: Path | str,
    images: str | None = None,
    source: str | None = None,
    max_pixels: int | None = None,
    use_ray: bool = True,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    progress: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    fetch=None,
) -> dict:
    """Run the importers of `groups` into the dataset directory `out`; return the manifest.

    `fetch` (a `curation.crawl.fetch.FetchPolicy`) is how images are fetched when
    `images` is a URL prefix; default: the default policy (no private addresses).
    """
    from curation.crawl.fetch import FetchPolicy
    from curation.storage.fs import canonical
    from curation.storage.objects import open_writer
    from curation.importers import get_importer
    from curation.images import DEFAULT_MAX_PIXELS
    from curation.importers.images import LoadImages

    from curation.storage.fs import is_local

    if is_url_prefix(images) and not is_local(str(out)):
        raise InputError(f"--images {images}: images fetched from a URL prefix land in a local folder first; "
                         "write the output to a local directory")
    importers = [get_importer(kind)(paths, source) for kind, paths in groups.items()]
    roots = _image_roots(images, importers)
    stage = LoadImages(roots, max_pixels or DEFAULT_MAX_PIXELS)
    fetch = fetch or FetchPolicy()
    identity = {"command": "ingest", "sources": {k: [canonical(p) for p in v] for k, v in groups.items()},
                "images": images, "source": source, "max_pixels": stage.max_pixels}
    if is_url_prefix(images):
        identity["fetch"] = dataclasses.asdict(fetch)
    inputs = tuple(p for paths in groups.values() for p in paths)
    with open_writer(out, overwrite=overwrite, inputs=inputs, resume=resume, config=identity) as writer:
        return _ingest_into(writer, importers, groups, stage, roots, images, source, use_ray, ray_address, num_cpus, fetch)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Annotations are acyclic dicts and lists: reference counting frees them, and
    the cyclic collector's full passes over millions of them only cost time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _ingest_into(writer, importers, groups, stage, roots, images, source, use_ray, ray_address, num_cpus, fetch) -> dict:
    from curation.importers.base import INGEST_STAGE, Merger, count_items
    from curation.importers.images import IMAGES_STAGE, partial_to_row
    from curation.runner import ParquetReader, Pipeline, Sink, init_ray, parquet_shards, run_pipeline
    from curation.schema import ANNOTATION_COLUMNS, rejects_from_pylist

    from curation.storage.fs import is_local, join, parquet_file

    work = _WorkWriter(join(str(writer.work_dir), "ingest"))
    ingest_rejects: Counter = Counter()
    pending: list[dict] = []

    def reject(r: dict) -> None:
        ingest_rejects[r["reason"]] += 1
        pending.append(r)
        if len(pending) >= REJECT_BATCH:
            writer.write("rejects", rejects_from_pylist(pending))
            pending.clear()

    def take(item) -> None:
        tag, value = item
        if tag == "reject":
            reject(value)
        else:
            work.add(partial_to_row(value), count_items(value), next(iter(value.get("refs") or ()), None))

    t0 = time.time()
    merger = Merger(streaming=len(importers) == 1 and importers[0].grouped)
    with _cyclic_gc_paused():
        for imp in importers:
            for tag, value in imp.read():
                if tag == "reject":
                    reject(value)
                else:
                    for item in merger.add(value):
                        take(item)
        for item in merger.finish():
            take(item)
    work.flush()
    if pending:
        writer.write("rejects", rejects_from_pylist(pending))
        pending.clear()
    items_read = sum(imp.items_read for imp in importers)
    writer.count_stage(INGEST_STAGE, items_read, work.count, ingest_rejects, time.time() - t0)
    writer.timings["ingest"] = time.time() - t0

    t1 = time.time()
    if work.files and is_url_prefix(images):
        fetched = writer.work_dir / "ingest-images"
        stage.urls, stage.errors, stage.error_reasons = _fetch(work.files, images, fetched, stage.max_pixels, fetch)
        stage.roots = [fetched.resolve()] + stage.roots
        writer.timings["download"] = time.time() - t1
    # Ray when there are images to read and hash; without any, the stage only checks sizes.
    needs_ray = use_ray and (roots or stage.roots or any(imp.own_images for imp in importers))
    if needs_ray:
        init_ray(address=ray_address, num_cpus=num_cpus)
    files = [(p, parquet_file(p).metadata.num_rows) for p in work.files]
    summary = run_pipeline(Pipeline(ParquetReader(stage.batch_size), [stage, Sink("records")]),
                           parquet_shards(files, WORK_FILE_ROWS), writer, executor="ray" if needs_ray else "local")
    writer.timings["images"] = time.time() - t1

    rejects = Counter(ingest_rejects)
    for name, counts in writer.stages.items():
        if name == IMAGES_STAGE:
            rejects.update(counts.dropped)
    summary = {
        "kinds": {imp.kind: [str(p) for p in imp.paths] for imp in importers},
        "sources": sorted({imp.source for imp in importers if imp.source}),
        "images": str(images) if images else None,
        "annotations_read": {imp.kind: imp.items_read for imp in importers},
        "records": writer.stage(IMAGES_STAGE).rows_out,
        "annotations": {k: summary["annotations"].get(k, 0) for k in (*ANNOTATION_COLUMNS, "text")},
        "rejects": dict(sorted(rejects.items())),
    }
    config = {"command": "ingest", "kinds": sorted(groups), "images": images, "source": source, "max_pixels": stage.max_pixels}
    return writer.close(config=config, extra={"ingest": summary})


def _fetch_policy(args: argparse.Namespace):
    from curation.commands import fetch_settings
    from curation.crawl.fetch import FetchPolicy

    settings = fetch_settings(args)
    try:
        return FetchPolicy(contact=settings.pop("crawler_contact"), **settings)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from curation.commands import check_out_dir

    check_out_dir(args.out, object_storage=True)
    groups = parse_sources(args.sources, args.kind)
    manifest = ingest(
        groups,
        args.out,
        images=args.images,
        source=args.source_name,
        max_pixels=args.max_pixels,
        use_ray=args.runner == "ray",
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        overwrite=args.overwrite,
        resume=args.resume,
        fetch=_fetch_policy(args),
    )
    s = manifest["ingest"]
    ann = ", ".join(f"{n} {k}" for k, n in s["annotations"].items() if n)
    rej = ", ".join(f"{n} {k}" for k, n in s["rejects"].items())
    print(f"ingest: {s['records']} records ({ann or 'no annotations'}); {sum(s['rejects'].values())} rejects ({rej or 'none'}) -> {args.out}")
    return 0
