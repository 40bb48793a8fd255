"""Download: a URL list becomes records through img2dataset's real engine.

1. The URL list is read, planned and deduplicated by `curation.crawl.urls`:
   input shards cut from file metadata, each shard's rows (`record_id`, `url`,
   `caption`, ...) read in its own task, duplicate URLs found by a shuffle.
2. `Img2datasetReader`, inside
   each shard's task, runs img2dataset's own `Downloader` + `Resizer` over the
   shard's URLs (no resize, no re-encode of JPEGs), fetching through
   `curation.crawl.fetch.fetching`: the address policy at connection time, the
   tool's user agent, X-Robots-Tag opt-outs honoured, per-host limits, retries
   with backoff. Duplicates are not fetched; they come out as rows to reject.
3. `FromImg2dataset`, a stage, turns img2dataset's rows into records; every
   row img2dataset could not fetch or decode becomes a reject of stage
   `download`. Its reason is img2dataset's error message mapped to a small set
   (`download_reason`: `blocked_address`, `opted_out`, `http_error`,
   `timeout`, `connection_error`, `not_an_image`, `image_too_large`, ...); the
   message itself is the detail. A duplicate is `duplicate_url`, its detail
   naming the kept record.

Every image is decoded once, completely, under the pixel limit
(`curation.images.decoded_size`), inside the download loop: a JPEG that
img2dataset would keep as downloaded is checked by PIL at libjpeg's 1/8 DCT
scale instead of img2dataset's full OpenCV decode (the same width, height and
bytes, and a cut-off file is `image_truncated`, which OpenCV may let pass);
anything else goes through img2dataset's own resizer (which re-encodes it to
JPEG) and its result is checked. Rows so checked carry `image_checked`;
`FromImg2dataset` decodes only rows without it.

A URL list without rows makes an empty dataset: img2dataset is not started.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.crawl.urls import UrlColumns
from curation.crawl.fetch import BLOCKED_PREFIX, FetchPolicy, fetching, img2dataset_module
from curation.errors import InputError
from curation.images import DEFAULT_MAX_PIXELS, ImageRejected, decoded_size
from curation.crawl.netpolicy import interleave_by_host
from curation.reasons import is_reason
from curation.reasons import (
    ASPECT_RATIO_TOO_LARGE,
    BLOCKED_ADDRESS,
    CONNECTION_ERROR,
    DOWNLOAD_ERROR,
    DUPLICATE_URL,
    HTTP_ERROR,
    IMAGE_TOO_LARGE,
    IMAGE_TOO_SMALL,
    NOT_AN_IMAGE,
    OPTED_OUT,
    TIMEOUT,
)
from curation.runtime import IMPORT_LOCK, Resources, Stage, ensure_reject_columns, scoped_env
from curation.schema import RECORD_SCHEMA, STRUCTURED_ANNOTATIONS

__all__ = [
    "Img2datasetReader",
    "FromImg2dataset",
    "download_reason",
    "DEFAULT_MAX_PIXELS",
]

log = logging.getLogger(__name__)

URL_LIST_FORMATS = (".parquet", ".csv", ".tsv", ".jsonl")


class FromImg2dataset(Stage):
    """img2dataset's Parquet rows → record rows; failures flow on as `download` rejects.

    A success not marked `image_checked` (by `Img2datasetReader`) is decoded
    completely under `max_pixels` here (`curation.images.decoded_size`):
    `image_truncated`, `not_an_image` and `image_too_large` rejects come from there. A row with
    `duplicate_of` set (never fetched) is a `duplicate_url` reject naming the kept record.
    """

    name = "download"
    resources = Resources(cpus=1)
    batch_size = 256

    def __init__(self, source: str, max_pixels: int = DEFAULT_MAX_PIXELS):
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        self.source = source
        self.max_pixels = int(max_pixels)

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols = batch.column_names
        n = batch.num_rows
        status = batch.column("status").to_pylist()
        errors = batch.column("error_message").to_pylist() if "error_message" in cols else [None] * n
        images = batch.column("jpg").to_pylist() if "jpg" in cols else [None] * n
        record_ids = batch.column("record_id").to_pylist()
        captions = batch.column("caption").to_pylist() if "caption" in cols else [None] * n
        dups = batch.column("duplicate_of").to_pylist() if "duplicate_of" in cols else [None] * n
        checked = batch.column("image_checked").to_pylist() if "image_checked" in cols else [False] * n
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        for i in range(n):
            if dups[i] is not None:
                reasons[i], details[i] = DUPLICATE_URL, f"same URL as {dups[i]}, downloaded once there"
                continue
            if status[i] != "success" or images[i] is None:
                reasons[i] = download_reason(errors[i])
                details[i] = (errors[i] or "").strip() or f"{status[i] or 'no status'}, no image"
                if details[i].startswith(CHECK_PREFIX):  # "image check: REASON: detail" -> detail
                    details[i] = details[i][len(CHECK_PREFIX):].split(": ", 1)[-1]
                continue
            if checked[i]:  # decoded completely in the download loop, under the same pixel limit
                continue
            try:
                decoded_size(images[i], self.max_pixels)
            except ImageRejected as exc:
                reasons[i], details[i] = exc.reason, exc.detail
        ok = [r is None for r in reasons]
        image_out = [img if good else None for img, good in zip(images, ok)]
        meta = batch.column("meta").cast(pa.string()) if "meta" in cols else pa.nulls(n, pa.string())
        table = pa.table(
            {
                "record_id": pa.array(record_ids, pa.string()),
                "source": pa.array([self.source] * n, pa.string()),
                "url": batch.column("url").cast(pa.string()),
                "image": pa.array(image_out, pa.binary()),
                "width": pa.array([w if g else None for w, g in zip(batch.column("width").to_pylist(), ok)], pa.int32()),
                "height": pa.array([h if g else None for h, g in zip(batch.column("height").to_pylist(), ok)], pa.int32()),
                "sha256": pa.array([hashlib.sha256(b).hexdigest() if b is not None else None for b in image_out], pa.string()),
                "captions": pa.array([[c] if c else [] for c in captions], pa.list_(pa.string())),
                "meta": meta,
                **{col: _parse_annotations(batch, col) for col in STRUCTURED_ANNOTATIONS},
                "reject_stage": pa.array([None if g else self.name for g in ok], pa.string()),
                "reject_reason": pa.array(reasons, pa.string()),
                "reject_detail": pa.array(details, pa.string()),
            }
        )
        return ensure_reject_columns(table)


CHECK_PREFIX = "image check: "  # the error message of an image refused by `_CheckedResizer`: "image check: REASON: detail"


def _keeps_bytes(head: bytes) -> bool:
    """Whether img2dataset's resizer (no resize, skip_reencode, JPEG output) keeps these bytes as
    downloaded: the file type test it uses (Python's imghdr) says JPEG."""
    return head[6:10] in (b"JFIF", b"Exif") or head[:4] == b"\xff\xd8\xff\xdb"


class _CheckedResizer:
    """img2dataset's resizer interface with one complete decode per image.

    Bytes img2dataset would keep (a JPEG) are checked by `decoded_size` (PIL,
    1/8 DCT scale for JPEG) and handed on as they are, with their size;
    anything else goes through img2dataset's own resizer, and what it returns
    (a fresh JPEG) is checked the same way. A refused image is img2dataset's
    failed row, its error message `CHECK_PREFIX + reason: detail`.
    """

    def __init__(self, resizer, max_pixels: int):
        """`resizer`: img2dataset's Resizer, or a function that makes it when first needed."""
        self._resizer = resizer
        self.max_pixels = max_pixels
        self._lock = threading.Lock()

    @property
    def resizer(self):
        if not hasattr(self._resizer, "resize_mode"):  # a factory: made once, by whichever thread asks first
            with self._lock:
                if not hasattr(self._resizer, "resize_mode"):
                    self._resizer = self._resizer()
        return self._resizer

    def __call__(self, img_stream, blurring_bbox_list=None):
        img_stream.seek(0)
        data = img_stream.read()
        if blurring_bbox_list is None and _keeps_bytes(data[:16]):
            out = (data, None, None, None, None, None)
        else:
            img_stream.seek(0)
            out = self.resizer(img_stream, blurring_bbox_list)
            if out[-1] is not None or out[0] is None:
                return out
        try:
            w, h = decoded_size(out[0], self.max_pixels)
        except ImageRejected as exc:
            return None, None, None, None, None, f"{CHECK_PREFIX}{exc.reason}: {exc.detail}"
        return out[0], w, h, out[3] or w, out[4] or h, None


def download_reason(message: str | None) -> str:
    """img2dataset's error message (urllib's, OpenCV's or its resizer's) as a reason of curation.reasons.

    The message itself belongs in the reject's `detail`.
    """
    text = (message or "").strip()
    lower = text.lower()
    if not text:
        return DOWNLOAD_ERROR
    if text.startswith(BLOCKED_PREFIX):  # curation.crawl.fetch: the address policy refused the URL or a redirect
        return BLOCKED_ADDRESS
    if text.startswith(CHECK_PREFIX):  # _CheckedResizer: the image's own decode check
        reason = text[len(CHECK_PREFIX):].split(":", 1)[0]
        return reason if is_reason(reason) else NOT_AN_IMAGE
    if "x-robots-tag" in lower:  # downloader.py: "Use of image disallowed by X-Robots-Tag directive"
        return OPTED_OUT
    if text.startswith("HTTP Error"):  # urllib.error.HTTPError: "HTTP Error 404: Not Found"
        return HTTP_ERROR
    if "timed out" in lower or "timeout" in lower:  # socket.timeout, "<urlopen error timed out>"
        return TIMEOUT
    if (
        "cv_io_max_image_pixels" in lower  # OpenCV's limit
        or lower == "image area too large"  # img2dataset's max_image_area
        or lower.startswith("body larger than")  # curation.crawl.fetch's max_bytes
    ):
        return IMAGE_TOO_LARGE
    if lower == "image decoding error" or text.startswith("OpenCV("):  # cv2.imdecode gave None, or asserted
        return NOT_AN_IMAGE
    if lower == "image too small":  # img2dataset's min_image_size
        return IMAGE_TOO_SMALL
    if lower == "aspect ratio too large":  # img2dataset's max_aspect_ratio
        return ASPECT_RATIO_TOO_LARGE
    if (
        "urlopen error [" in lower  # URLError around an OSError: refused, unknown host, TLS
        or lower.startswith("[errno")  # ConnectionResetError and friends
        or "connection" in lower  # "Remote end closed connection without response"
        or lower.startswith("incompleteread")  # the body ended early
    ):
        return CONNECTION_ERROR
    return DOWNLOAD_ERROR


def _parse_annotations(batch: pa.Table, col: str) -> pa.Array:
    typ = RECORD_SCHEMA.field(col).type
    if col not in batch.column_names:
        return pa.array([[]] * batch.num_rows, typ)
    return pa.array([json.loads(v) if v else [] for v in batch.column(col).to_pylist()], typ)



# ------------------------------------------------------- download on the workers


class _CollectingWriter:
    """img2dataset's sample-writer interface, handing each row to `emit` instead of a file."""

    emit = None  # set per download in a subclass

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        self.encode_format = encode_format

    def write(self, img_str, key, caption, meta):
        self.emit({"key": key, self.encode_format: img_str, **meta})

    def close(self):
        self.emit(None)


@dataclass(frozen=True)
class Img2datasetReader:
    """Reader of a URL input shard: img2dataset's own Downloader and Resizer, as a library.

    Runs inside the shard's task: the shard's URLs go through img2dataset's
    download loop (its threads, X-Robots-Tag check, resizer with no resize and
    no re-encode, EXIF off), fetching through `curation.crawl.fetch.fetching`
    with `policy` (address policy, user agent, per-host limit, retries with
    backoff), and every row it would have written comes out here instead, in
    batches, while the next ones download; nothing touches the disk. The rows
    are img2dataset's: `status`, `error_message`, `jpg`, `width`, `height`,
    `sha256` and the URL list's columns. Rows marked `duplicate_of` are not
    fetched and come out first, as they are.

    img2dataset's own sha256 is off: `FromImg2dataset` hashes the bytes that are
    stored (for a JPEG kept as it is, the same bytes), once.

    The URLs are handed to img2dataset taking turns among hosts
    (`interleave_by_host`), so the per-host limit does not idle the threads.
    When the generator ends it returns the shard's fetch counts
    (`requests_by_host`, ...), which the runner adds to the shard's result.
    """

    threads: int = 16
    timeout: int = 10
    retries: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 256
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    # a URL list's columns (curation.crawl.urls): the shard is a slice of a list file, read here, its
    # duplicate URLs taken from the shard's index (`shard.duplicates`) when it was complete at submission
    columns: "UrlColumns | None" = None

    def __call__(self, shard) -> "Iterator[pa.Table]":
        checked = {"duplicates_checked": True} if self.columns is None or shard.checked else {}
        if self.columns is not None:
            from curation.crawl.urls import read_slice, shard_duplicates

            urls = read_slice(shard, self.columns)
            dup = pa.nulls(urls.num_rows, pa.string())
            if shard.duplicates:
                found = shard_duplicates(shard.duplicates, shard.shard_id)
                of = dict(zip(found.column("record_id").to_pylist(), found.column("duplicate_of").to_pylist()))
                dup = pa.array([of.get(r) for r in urls.column("record_id").to_pylist()], pa.string())
            urls = urls.append_column("duplicate_of", dup)
        else:
            urls = pq.read_table(shard.path)
        if urls.num_rows == 0:
            return checked
        counts = yield from self._fetch(shard, urls)
        return {**(counts or {}), **checked}

    def _fetch(self, shard, urls: pa.Table):
        if "duplicate_of" in urls.column_names:
            dup = pc.is_valid(urls.column("duplicate_of"))
            duplicates, urls = urls.filter(dup), urls.filter(pc.invert(dup))
            if duplicates.num_rows:
                yield _duplicate_rows(duplicates)
        if urls.num_rows == 0:
            return {}
        urls = urls.take(pa.array(interleave_by_host(urls.column("url").to_pylist()), pa.int64()))
        return (yield from self._download(shard, urls))

    def _download(self, shard, urls: pa.Table):
        import queue
        import threading
        import uuid

        import fsspec

        env = {"OPENCV_IO_MAX_IMAGE_PIXELS": str(int(self.max_pixels)), "NO_ALBUMENTATIONS_UPDATE": "1"}
        with scoped_env(env):
            Downloader = img2dataset_module("downloader").Downloader

        def resizer():  # img2dataset's own, made on the first image that needs it (not a JPEG kept as it is)
            with scoped_env(env), IMPORT_LOCK:  # its imports (OpenCV, albumentations) see no placeholder
                return img2dataset_module("resizer").Resizer(
                    image_size=256, resize_mode="no", resize_only_if_bigger=False, encode_format="jpg",
                    skip_reencode=True, max_image_area=float(self.max_pixels))

        mem = fsspec.filesystem("memory")
        tag = f"curate-{os.getpid()}-{shard.shard_id}-{uuid.uuid4().hex[:8]}"
        shard_file, stats_dir = f"memory://{tag}/urls.arrow", f"memory://{tag}/out"
        with mem.open(f"/{tag}/urls.arrow", "wb") as f, pa.ipc.new_file(f, urls.schema) as w:
            w.write_table(urls)
        columns = ["url", "caption", *[c for c in urls.column_names if c not in ("url", "caption")]]
        rows: "queue.Queue" = queue.Queue(maxsize=4 * self.batch_size)
        # each row with the time it was fetched: the stage's seconds are the fetch's, not the reader's pace
        writer = type("Collect", (_CollectingWriter,), {"emit": staticmethod(lambda row: rows.put((time.perf_counter(), row)))})
        downloader = Downloader(
            sample_writer_class=writer,
            resizer=_CheckedResizer(resizer, self.max_pixels),
            thread_count=max(1, self.threads), save_caption=True, extract_exif=False, output_folder=stats_dir,
            column_list=columns, timeout=self.timeout, number_sample_per_shard=max(urls.num_rows, 10),
            oom_shard_count=5, compute_hash=None, verify_hash_type=None, encode_format="jpg",
            retries=max(0, self.retries), user_agent_token=self.policy.user_agent_token,
            disallowed_header_directives=list(self.policy.disallowed_header_directives),
        )
        failure: list[BaseException] = []
        counts: dict = {}

        def download() -> None:
            fetch0 = time.perf_counter()
            try:
                with scoped_env(env), fetching(self.policy) as stats:
                    try:
                        downloader.download_shard((shard.shard_id, shard_file))
                    finally:
                        counts.update(stats.to_json(), fetch_seconds=round(time.perf_counter() - fetch0, 3))
            except BaseException as exc:  # handed to the reading side, raised there
                failure.append(exc)
                rows.put((time.perf_counter(), None))

        thread = threading.Thread(target=download, name=f"img2dataset-{shard.shard_id}", daemon=True)
        t0 = time.perf_counter()
        thread.start()
        try:
            batch: list[dict] = []
            while True:
                fetched, row = rows.get()
                if row is not None:
                    batch.append(row)
                if batch and (row is None or len(batch) >= self.batch_size):
                    # the fetch's wall time from the previous batch's last row to this one's: the stage's
                    # seconds add up to the fetch's own wall, from its start to its last row, however
                    # fast the flow takes the batches
                    rows_out, batch = batch, []
                    yield _timed_rows(rows_out, "download", fetched - t0, image_checked=True)
                    t0 = fetched
                if row is None:
                    break
        finally:
            while thread.is_alive():  # the reading side stopped early: let the download loop finish
                try:
                    rows.get(timeout=0.1)
                except queue.Empty:
                    pass
            if mem.exists(f"/{tag}"):
                mem.rm(f"/{tag}", recursive=True)
        if failure:
            raise failure[0]
        return counts


def _duplicate_rows(duplicates: pa.Table) -> pa.Table:
    """Rows of duplicate URLs, shaped like img2dataset's failed rows (nothing was fetched)."""
    n = duplicates.num_rows
    extra = {
        "status": pa.array(["skipped"] * n, pa.string()),
        "error_message": pa.array([f"duplicate of {d}" for d in duplicates.column("duplicate_of").to_pylist()], pa.string()),
        "width": pa.nulls(n, pa.int32()),
        "height": pa.nulls(n, pa.int32()),
    }
    for name, values in extra.items():
        duplicates = duplicates.append_column(name, values)
    return duplicates


def _timed_rows(rows: list[dict], stage: str, seconds: float, image_checked: bool = False) -> pa.Table:
    from curation.runtime import SECONDS_PREFIX

    table = pa.Table.from_pylist(rows)
    if image_checked:  # every success went through _CheckedResizer
        table = table.append_column("image_checked", pa.array([True] * len(rows), pa.bool_()))
    return table.append_column(SECONDS_PREFIX + stage, pa.array([seconds] + [0.0] * (len(rows) - 1), pa.float64()))
