"""`img2dataset`: img2dataset output (Parquet or WebDataset shards) -> records with images and captions.

    OUT/00000.tar  (KEY.jpg, KEY.txt, KEY.json per sample)  output_format=webdataset
    OUT/00000.parquet  (key, url, caption, status, jpg, ...)  output_format=parquet

The source is the output folder (or single shard files). Samples whose
`status` is not `success` are rejected with the reason that `curate download`
gives the same error (`http_error`, `timeout`, `not_an_image`, ...; see
`curation.crawl.download.download_reason`) and img2dataset's `error_message` in the
detail. The record id is `SOURCE:` + img2dataset's `key`; the caption is the
sample's `txt` / `caption`. The image bytes come from the shard, so
`--images` is not needed; the image stage checks them like any other (full
decode). Shards are read one sample (tar) or one
batch (Parquet) at a time: memory holds one batch of images.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, Iterator

from curation.crawl.download import download_reason
from curation.errors import InputError
from curation.importers.base import Importer, Item, open_parquet, partial
from curation.reasons import INVALID_ANNOTATION, NO_ANNOTATIONS

__all__ = ["Img2Dataset"]

_IMAGE_EXT = ("jpg", "jpeg", "png", "webp")


class Img2Dataset(Importer):
    kind = "img2dataset"
    default_source = "img2dataset"
    grouped = True
    own_images = True
    folders = True

    def _shards(self) -> list[Path]:
        shards: list[Path] = []
        for p in self.paths:
            if p.is_dir():
                tars = sorted(p.glob("*.tar"))
                # beside tar shards, img2dataset's Parquet files hold metadata only
                shards += tars or sorted(p.glob("*.parquet"))
            else:
                shards.append(p)
        if not shards:
            raise InputError(f"{self.paths[0]}: no img2dataset shards (*.tar or *.parquet)")
        return shards

    def read(self) -> Iterator[Item]:
        for shard in self._shards():
            if shard.suffix == ".tar":
                yield from self._read_tar(shard)
            elif shard.suffix == ".parquet":
                yield from self._read_parquet(shard)
            else:
                raise InputError(f"{shard}: not an img2dataset shard (.tar or .parquet)")

    def _sample(self, shard: Path, meta: dict[str, Any], caption: str | None, image: bytes | None) -> Iterator[Item]:
        self.items_read += 1
        key = meta.get("key")
        if key is None:
            yield self.reject(None, INVALID_ANNOTATION, "a sample without a key", shard)
            return
        status = meta.get("status", "success")
        if status != "success" or image is None:
            message = (meta.get("error_message") or "").strip() or f"{status or 'no status'}, no image"
            yield self.reject(key, download_reason(meta.get("error_message")), f"sample {key}: {message}", shard)
            return
        extra = {k: v for k, v in meta.items() if k not in ("key", "url", "caption", "status", "error_message", "width", "height", "jpg", "txt", "json")}
        if caption is None:
            yield self.reject(key, NO_ANNOTATIONS, f"sample {key} has no caption", shard)
            return
        p = partial(
            self.rid(key),
            self.source,
            url=meta.get("url"),
            image=image,
            declared=True,
            captions=[caption] if caption is not None else [],
            refs=[f"{shard.name}: {key}"],
            meta=json.loads(json.dumps(extra, default=str)),
        )
        yield "record", p

    def _read_tar(self, shard: Path) -> Iterator[Item]:
        try:
            with shard.open("rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
                current, parts = None, {}
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.rpartition("/")[2].partition(".")
                    if key != current and current is not None:
                        yield from self._tar_sample(shard, current, parts)
                        parts = {}
                    current = key
                    parts[ext] = tar.extractfile(member).read()
                if current is not None:
                    yield from self._tar_sample(shard, current, parts)
        except tarfile.TarError as exc:
            raise InputError(f"{shard}: unreadable tar shard: {exc}") from exc

    def _tar_sample(self, shard: Path, key: str, parts: dict[str, bytes]) -> Iterator[Item]:
        try:
            meta = json.loads(parts["json"]) if "json" in parts else {}
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            self.items_read += 1
            yield self.reject(key, "invalid_annotation", f"sample {key}: {key}.json is not JSON: {exc}", shard)
            return
        if not isinstance(meta, dict):
            self.items_read += 1
            yield self.reject(key, "invalid_annotation", f"sample {key}: {key}.json is not a JSON object", shard)
            return
        meta.setdefault("key", key)
        caption = parts["txt"].decode("utf-8", errors="replace") if "txt" in parts else meta.get("caption")
        image = next((parts[e] for e in _IMAGE_EXT if e in parts), None)
        yield from self._sample(shard, meta, caption, image)

    def _read_parquet(self, shard: Path) -> Iterator[Item]:
        for batch in open_parquet(shard).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                image = next((row[e] for e in _IMAGE_EXT if row.get(e) is not None), None)
                yield from self._sample(shard, row, row.get("caption"), image)
