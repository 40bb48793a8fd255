"""The training side: a PyTorch IterableDataset over a dataset directory.

`QwenVLReader(DIR, table="samples" | "sequences")` reads the manifest-listed
shards only (`curation.storage.dataset.Dataset`, each shard's row count checked) and
yields one training example per sample or packed sequence:

- `input_ids`, `labels`, `attention_mask`, `position_ids` (int64 tensors).
  Labels follow the spec: a pretraining sample (section 4) is supervised on
  its TARGET only; an SFT sample (section 5) exactly as `finetune.py`
  (`formats.sft.sft_ids_and_labels`); everything else is -100. A packed
  sequence is its members one after another, position ids restarting at 0
  for each member (`seq_lens` gives the members' lengths).
- images: Qwen-VL `images` (n, 3, 448, 448); Qwen2-VL / Qwen2.5-VL
  `pixel_values` (patches, 1176) and `image_grid_thw` (n, 3) at the
  `min_pixels` / `max_pixels` the samples were built with (the manifest's
  `build` section) - see `formats.images`.
- `id` (sample or sequence id) and `num_tokens` (the manifest's count, equal
  to `len(input_ids)`).

Splitting. The rows of the table, in shard order (shuffled per epoch with
the seed when `shuffle`), are cut into `world_size * num_workers` contiguous
ranges of equal size (+-1); consumer `rank * num_workers + worker` reads its
range only, reading just the Parquet row groups that overlap it. Every row is
read by exactly one consumer. Within a range, a seeded shuffle buffer mixes
rows across row groups and shards.

Resuming. Every example carries `_worker`, `_workers` and `_index` (its
position in its worker's stream); `observe(batch)` (called by `loader()` for
each batch it hands out) records how far each worker got, `state_dict()`
returns it, and `load_state_dict()` makes each worker skip exactly what was
consumed: the stream is deterministic, so the rest follows. Skipped rows pass
the shuffle buffer but are never tokenized nor decoded.

`pad_collate` pads a list of examples to the longest (`<|endoftext|>` for
ids, -100 for labels, 0 for the mask and positions) and concatenates images.

Packed sequences: a sequence's members are looked up in the samples shard of
the same name first (packing is per input shard, so that is where they are);
members found nowhere there are located through an index of every samples
shard's ids, built once on demand.
"""

from __future__ import annotations

import logging
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from curation.storage.dataset import Dataset
from curation.image_table import ImagePart, fill_images
from formats.coords import image_pad_count
from formats.images import qwen2_vl_patches, qwen_vl_pixels
from formats.sft import IGNORE, sft_ids_and_labels
from formats.tokenizer import get_tokenizer

__all__ = ["IGNORE", "QwenVLReader", "encode_sample", "pad_collate", "split_range"]

log = logging.getLogger(__name__)

DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
# rows per Parquet read batch: with image bytes, what Arrow holds beside a row group's dictionary page; without
# them (images=False reads keys and sizes only), rows are small and bigger batches cost less per row
READ_BATCH, READ_BATCH_NO_BYTES = 8, 256
_IMG_KEY = re.compile(r"<img>(.*?)</img>", re.S)
_SAMPLE_COLUMNS = ["sample_id", "task", "format", "prompt", "target", "conversations", "images", "num_tokens"]
_SEQUENCE_COLUMNS = ["sequence_id", "task", "format", "sample_ids", "num_tokens"]


def split_range(total: int, parts: int, index: int) -> tuple[int, int]:
    """[start, end) of part `index` when `total` items are cut into `parts` contiguous parts (sizes differ by <= 1)."""
    if parts <= 0 or not 0 <= index < parts:
        raise ValueError(f"part {index} of {parts} does not exist")
    q, r = divmod(total, parts)
    start = index * q + min(index, r)
    return start, start + q + (1 if index < r else 0)


def _image_pads(row: Mapping[str, Any], min_pixels: int, max_pixels: int) -> list[int]:
    return [image_pad_count(im["height"], im["width"], min_pixels=min_pixels, max_pixels=max_pixels) for im in row["images"] or []]


def encode_sample(
    row: Mapping[str, Any], min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one sample row; labels -100 outside the supervised positions."""
    fmt = row["format"]
    tok = get_tokenizer(fmt)
    qwen2 = fmt != "qwen-vl"
    pads = _image_pads(row, min_pixels, max_pixels) if qwen2 else None
    if row.get("conversations"):
        return sft_ids_and_labels(row["conversations"], tok, pads)
    prompt, target = row["prompt"] or "", row["target"] or ""
    if qwen2:
        ids = tok.encode(prompt + target, pads)
        p_ids = tok.encode(prompt, pads[: prompt.count("<|image_pad|>")])
    else:
        ids, p_ids = tok.encode(prompt + target), tok.encode(prompt)
    # The text is encoded whole (its ids are what num_tokens counts). Where BPE merges the prompt's last
    # characters with the target's first (Qwen2.5-VL: "format." + "[{" is one token ".[{"), that token is
    # supervised: the loss covers every target character, and at most that one token reaches back.
    k = 0
    for a, b in zip(ids, p_ids):
        if a != b:
            break
        k += 1
    return ids, [IGNORE] * k + ids[k:]


def _open(path: Path) -> pq.ParquetFile:
    """A shard for streaming reads: column chunks read in 64 KiB pieces, not buffered whole.

    With READ_BATCH rows per batch, Arrow holds a row group's dictionary page (where the writer folds the
    copies of an image, `curation.schema.parquet_write_options`) and one small batch. (Reading the image
    column as a dictionary instead holds about four copies of that page: bench/bench_reader.py.)
    """
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)


class _RecentImages:
    """The bytes objects of the last few images read, by key: the samples of one image are adjacent, so each
    image becomes one bytes object that its rows share."""

    def __init__(self, size: int = 8):
        self.size = size
        self.items: OrderedDict[str, bytes] = OrderedDict()

    def share(self, key: str, buf: pa.Buffer) -> bytes:
        """`buf`'s bytes: the object already made for `key` when equal (compared in Arrow's memory), else a new one."""
        seen = self.items.get(key)
        if seen is None or len(seen) != buf.size or not pa.py_buffer(seen).equals(buf):
            seen = buf.to_pybytes()
        self.items[key] = seen
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return seen


def _columns(pf: pq.ParquetFile, wanted: Sequence[str], image_bytes: bool) -> list[str]:
    """The wanted columns this shard has; without the image bytes (but with keys and sizes) if not wanted."""
    have = pf.schema_arrow.names
    names = [c for c in wanted if c in have]
    if not image_bytes and "images" in names:
        fields = [f.name for f in pf.schema_arrow.field("images").type.value_type if f.name != "image"]
        i = names.index("images")
        names[i : i + 1] = [f"images.list.element.{f}" for f in fields]
    return names


def _batch_rows(batch, recent: _RecentImages) -> list[dict]:
    """A record batch as row dicts, each image's bytes shared through `recent` (one bytes object per image)."""
    names = batch.schema.names
    if "images" not in names:
        return batch.to_pylist()
    col = batch.column(names.index("images"))
    rows = batch.drop_columns(["images"]).to_pylist()
    structs = col.flatten()  # this slice's images
    children = dict(zip([f.name for f in col.type.value_type], structs.flatten()))
    data = children.pop("image", None)
    plain = {f: c.to_pylist() for f, c in children.items()}
    valid = structs.is_valid().to_pylist()
    start = 0
    for row, n in zip(rows, col.value_lengths().to_pylist()):
        if n is None:
            row["images"] = None
            continue
        out = []
        for j in range(start, start + n):
            if not valid[j]:
                out.append(None)
                continue
            im = {f: v[j] for f, v in plain.items()}
            if data is not None:
                im["image"] = recent.share(im["key"], data[j].as_buffer()) if data[j].is_valid else None
            out.append(im)
        start += n
        row["images"] = out
    return rows


class _ImageCache:
    """The last few decoded images of a worker, by (key, size, bytes' hash): samples of one image share them."""

    def __init__(self, size: int = 64):
        self.size = size
        self.items: OrderedDict = OrderedDict()

    def get(self, im: Mapping[str, Any], make):
        k = (im["key"], len(im["image"]), hash(im["image"]))
        if k in self.items:
            self.items.move_to_end(k)
            return self.items[k]
        v = self.items[k] = make(im["image"])
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return v


def _pixels(row: Mapping[str, Any], min_pixels: int, max_pixels: int, cache: _ImageCache | None = None) -> list:
    """One entry per image of the row, in the order the text references them (read-only tensors)."""
    cache = cache or _ImageCache(0)
    images = row["images"] or []
    if row["format"] == "qwen-vl":
        by_key = {im["key"]: im for im in images}
        text = "".join(t["value"] for t in row["conversations"]) if row.get("conversations") else (row["prompt"] or "") + (row["target"] or "")
        keys = _IMG_KEY.findall(text)
        missing = [k for k in keys if k not in by_key or not by_key[k]["image"]]
        if missing:
            raise ValueError(f"sample {row['sample_id']}: image {missing[0]!r} has no bytes in the row")
        return [cache.get(by_key[k], qwen_vl_pixels) for k in keys]
    return [cache.get(im, lambda b: qwen2_vl_patches(b, min_pixels, max_pixels)) for im in images]


class QwenVLReader(IterableDataset):
    """Training examples from a dataset directory's samples or packed sequences (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        table: str = "samples",
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        buffer_size: int = 256,
        images: bool = True,
        verify: bool = False,
    ):
        if table not in ("samples", "sequences"):
            raise ValueError(f"table must be 'samples' or 'sequences', got {table!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.dataset = Dataset(path, verify=verify)
        self.path = Path(path)
        self.table = table
        if table not in self.dataset.tables() or (table == "sequences" and "samples" not in self.dataset.tables()):
            raise ValueError(f"{path}: the manifest lists no {table!r} table")
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.buffer_size = shuffle, seed, buffer_size
        self.images = images
        build = self.dataset.manifest.get("build") or {}
        self.min_pixels = int(build.get("min_pixels") or DEFAULT_MIN_PIXELS)
        self.max_pixels = int(build.get("max_pixels") or DEFAULT_MAX_PIXELS)
        self.epoch = 0
        self._consumed: dict[int, int] = {}  # worker -> examples consumed (observed)
        self._workers: int | None = None
        self._skip: dict[int, int] = {}
        self._cache: _ImageCache | None = None
        self._shards = self.dataset.shards(table)
        self.dataset.shard_paths(table)  # every listed shard present with its row count, now

    # -- size and order -----------------------------------------------------------
    @property
    def total_rows(self) -> int:
        """Rows of the table over every rank and worker (one epoch). No __len__: a rank reads only its part."""
        return sum(s["rows"] for s in self._shards)

    def set_epoch(self, epoch: int) -> None:
        """Another shard order and buffer shuffle; progress starts over."""
        self.epoch = epoch
        self._consumed, self._skip, self._workers = {}, {}, None

    def _shard_order(self) -> list[int]:
        order = list(range(len(self._shards)))
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}:shards").shuffle(order)
        return order

    # -- resume -------------------------------------------------------------------
    def observe(self, batch: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Record a consumed batch (collated or a list of examples): how far each worker got."""
        items = batch if isinstance(batch, (list, tuple)) else [
            {"_worker": w, "_workers": n, "_index": i} for w, n, i in zip(batch["_worker"], batch["_workers"], batch["_index"])
        ]
        for it in items:
            w, n, i = int(it["_worker"]), int(it["_workers"]), int(it["_index"])
            if self._workers not in (None, n):
                raise ValueError(f"batch from a loader with {n} workers, this reader's loader has {self._workers}")
            self._workers = n
            self._consumed[w] = max(self._consumed.get(w, 0), i + 1)

    def state_dict(self) -> dict:
        consumed = dict(self._skip)
        for w, n in self._consumed.items():
            consumed[w] = max(consumed.get(w, 0), n)
        return {"table": self.table, "epoch": self.epoch, "seed": self.seed, "shuffle": self.shuffle,
                "buffer_size": self.buffer_size, "rank": self.rank, "world_size": self.world_size,
                "num_workers": self._workers, "consumed": {str(k): v for k, v in sorted(consumed.items())}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue where `state` stopped; the loader must have as many workers as the one that made it."""
        for key in ("table", "seed", "shuffle", "buffer_size", "rank", "world_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state has {key}={state[key]!r}, this reader {getattr(self, key)!r}")
        self.epoch = int(state["epoch"])
        self._skip = {int(k): int(v) for k, v in state["consumed"].items()}
        self._consumed = {}
        self._workers = state["num_workers"]

    # -- reading --------------------------------------------------------------------
    def _rows(self, start: int, end: int) -> Iterator[dict]:
        """Rows [start, end) of the table in this epoch's shard order, reading only overlapping row groups."""
        columns = _SAMPLE_COLUMNS if self.table == "samples" else _SEQUENCE_COLUMNS
        pos = 0
        for k in self._shard_order():
            shard = self._shards[k]
            if pos >= end:
                return
            if pos + shard["rows"] <= start:
                pos += shard["rows"]
                continue
            pf = _open(self.path / shard["path"])
            part = self._image_part(shard["path"])
            for g in range(pf.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                lo, hi = max(start, pos), min(end, pos + n)
                if lo < hi:
                    names = _columns(pf, columns, self.images)
                    yield from self._row_group(pf, g, names, lo - pos, hi - pos, shard["path"], part)
                pos += n
                if pos >= end:
                    return

    def _image_part(self, shard: str) -> ImagePart | None:
        """Where the images of a samples shard are, when they are stored once (an `images` table)."""
        if not self.images or not shard.startswith("samples/"):
            return None
        return self.dataset.image_part(self.path / shard)

    def _row_group(self, pf, g: int, names: list[str], lo: int, hi: int, shard: str,
                   part: ImagePart | None = None) -> Iterator[dict]:
        """Rows [lo, hi) of row group g, read in batches of READ_BATCH rows; one bytes object per image.

        Samples of one image carry the same bytes (self-contained rows): a row group of Visual-Genome-like
        data holds ~50 copies of each image. The writer folds them into the column chunk's dictionary page,
        `_open` reads the chunk in small batches, and the rows of one image share one bytes object
        (`_RecentImages`), so what the reader holds stays near the unique image bytes (bench/bench_reader.py
        measures it).
        """
        recent = _RecentImages()
        at = 0
        size = READ_BATCH if "images" in names else READ_BATCH_NO_BYTES
        for batch in pf.iter_batches(batch_size=size, row_groups=[g], columns=names):
            a, b = max(lo, at), min(hi, at + batch.num_rows)
            if a < b:
                for row in _batch_rows(fill_images(batch.slice(a - at, b - a), part), recent):
                    row["_shard"] = shard
                    yield row
            at += batch.num_rows
            if at >= hi:
                return

    def _shuffled(self, rows: Iterator[dict], consumer: int) -> Iterator[dict]:
        if not self.shuffle:
            yield from rows
            return
        rng = random.Random(f"{self.seed}:{self.epoch}:{consumer}:buffer")
        buf: list[dict] = []
        for row in rows:
            if len(buf) < self.buffer_size:
                buf.append(row)
                continue
            j = rng.randrange(len(buf))
            buf[j], row = row, buf[j]
            yield row
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self._workers is not None and self._skip and self._workers != workers:
            raise ValueError(f"state saved with {self._workers} loader workers, resumed with {workers}")
        consumer = self.rank * workers + worker
        start, end = split_range(self.total_rows, self.world_size * workers, consumer)
        skip = self._skip.get(worker, 0)
        members = _Members(self) if self.table == "sequences" else None
        self._cache = _ImageCache()
        for index, row in enumerate(self._shuffled(self._rows(start, end), consumer)):
            if index < skip:
                continue
            ex = self._example(row, members)
            ex.update(_worker=worker, _workers=workers, _index=index)
            if info is None:  # in this process: what is yielded is consumed
                self._workers = workers
                self._consumed[worker] = index + 1
            yield ex

    def _example(self, row: dict, members: "_Members | None") -> dict:
        if members is None:
            samples, ident = [row], row["sample_id"]
        else:
            samples, ident = members.get(row), row["sequence_id"]
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        lens: list[int] = []
        pix: list = []
        for s in samples:
            i, lab = encode_sample(s, self.min_pixels, self.max_pixels)
            if len(i) != s["num_tokens"]:
                raise ValueError(f"sample {s['sample_id']}: {len(i)} ids, the shard says num_tokens {s['num_tokens']}")
            ids += i
            labels += lab
            positions += range(len(i))
            lens.append(len(i))
            if self.images:
                pix += _pixels(s, self.min_pixels, self.max_pixels, self._cache)
        if len(ids) != row["num_tokens"]:
            raise ValueError(f"{ident}: {len(ids)} ids, the shard says num_tokens {row['num_tokens']}")
        ex: dict[str, Any] = {
            "id": ident,
            "format": row["format"],
            "task": row["task"],
            "num_tokens": row["num_tokens"],
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.ones(len(ids), dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
            "seq_lens": torch.tensor(lens, dtype=torch.long),
        }
        if self.images:
            if row["format"] == "qwen-vl":
                ex["images"] = torch.stack(pix) if pix else torch.zeros(0, 3, 448, 448)
            else:
                ex["pixel_values"] = torch.cat([p for p, _ in pix]) if pix else torch.zeros(0, 1176)
                ex["image_grid_thw"] = torch.stack([g for _, g in pix]) if pix else torch.zeros(0, 3, dtype=torch.long)
        return ex

    # -- a DataLoader that records progress --------------------------------------------
    def loader(self, batch_size: int, num_workers: int = 0, **kwargs) -> Iterator[dict]:
        """Batches from a DataLoader over this reader (padded by `pad_collate`), each observed for `state_dict()`."""
        kwargs.setdefault("collate_fn", pad_collate)
        dl = DataLoader(self, batch_size=batch_size, num_workers=num_workers, **kwargs)
        for batch in dl:
            self.observe(batch)
            yield batch


class _Members:
    """Sample rows of packed sequences, found in the samples shard of the sequence shard's name first."""

    def __init__(self, reader: QwenVLReader, cache_shards: int = 2):
        self.reader = reader
        self.by_name = {Path(s["path"]).name: s for s in reader.dataset.shards("samples")}
        self.cache: OrderedDict[str, dict[str, dict]] = OrderedDict()
        self.cache_shards = cache_shards
        self.index: dict[str, str] | None = None

    def _load(self, shard_path: str) -> dict[str, dict]:
        if shard_path in self.cache:
            self.cache.move_to_end(shard_path)
            return self.cache[shard_path]
        pf = _open(self.reader.path / shard_path)
        names = _columns(pf, _SAMPLE_COLUMNS, self.reader.images)
        part = self.reader._image_part(shard_path)
        rows = {}
        for g in range(pf.num_row_groups):  # batched, one bytes object per image key (see _row_group)
            for r in self.reader._row_group(pf, g, names, 0, pf.metadata.row_group(g).num_rows, shard_path, part):
                rows[r["sample_id"]] = r
        self.cache[shard_path] = rows
        while len(self.cache) > self.cache_shards:
            self.cache.popitem(last=False)
        return rows

    def _locate(self, sid: str) -> str:
        if self.index is None:
            self.index = {}
            for s in self.reader.dataset.shards("samples"):
                ids = pq.read_table(self.reader.path / s["path"], columns=["sample_id"]).column(0).to_pylist()
                self.index.update(dict.fromkeys(ids, s["path"]))
        try:
            return self.index[sid]
        except KeyError:
            raise ValueError(f"{self.reader.path}: sample {sid} of a packed sequence is in no samples shard") from None

    def get(self, seq: dict) -> list[dict]:
        same = self.by_name.get(Path(seq["_shard"]).name)
        rows = self._load(same["path"]) if same else {}
        out = []
        for sid in seq["sample_ids"]:
            row = rows.get(sid)
            if row is None:
                row = self._load(self._locate(sid))[sid]
            out.append(row)
        return out


def pad_collate(examples: Sequence[Mapping[str, Any]], pad_id: int = 151643) -> dict:
    """Pad to the longest example: ids with `pad_id` (`<|endoftext|>`), labels -100, mask and positions 0."""
    n = max(len(e["input_ids"]) for e in examples)
    fill = {"input_ids": pad_id, "labels": IGNORE, "attention_mask": 0, "position_ids": 0}
    out: dict[str, Any] = {}
    for key, value in fill.items():
        t = torch.full((len(examples), n), value, dtype=torch.long)
        for i, e in enumerate(examples):
            t[i, : len(e[key])] = e[key]
        out[key] = t
    if "images" in examples[0]:
        out["images"] = torch.cat([e["images"] for e in examples])
    if "pixel_values" in examples[0]:
        out["pixel_values"] = torch.cat([e["pixel_values"] for e in examples])
        out["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in examples])
    out["seq_lens"] = [e["seq_lens"] for e in examples]
    for key in ("id", "format", "task", "num_tokens", "_worker", "_workers", "_index"):
        out[key] = [e[key] for e in examples]
    return out
