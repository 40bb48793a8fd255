"""curation/card.py: every dataset directory's README.md lets Hugging Face `datasets` load its tables."""

import io

import pytest

from curation.card import MARKER, features_yaml
from curation.storage.dataset import Dataset, DatasetWriter
from curation.schema import TABLE_SCHEMAS, records_from_pylist


def _png(w, h, shade):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (shade, 255 - shade, 90)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return str(tmp_path / "hf-cache")


@pytest.mark.parametrize("table", sorted(TABLE_SCHEMAS))
def test_features_are_what_datasets_writes_for_the_schema(table):
    import datasets

    feats = datasets.Features.from_arrow_schema(TABLE_SCHEMAS[table])
    if table in ("records", "images"):
        feats["image"] = datasets.Image()
    if table == "samples":
        feats["images"] = datasets.List({"key": datasets.Value("string"), "image": datasets.Image(),
                                         "width": datasets.Value("int32"), "height": datasets.Value("int32")})
    assert features_yaml(TABLE_SCHEMAS[table], table) == feats._to_yaml_list()


@pytest.fixture
def built(tmp_path):
    from curation.commands.build import build_dataset

    rows = [{"record_id": f"t:{i}", "source": "t", "image": _png(40 + i, 30, 20 * i), "width": 40 + i, "height": 30,
             "captions": [f"A flat picture number {i}."]} for i in range(5)]
    with DatasetWriter(tmp_path / "records") as w:
        w.write("records", records_from_pylist(rows))
        w.close()
    build_dataset(str(tmp_path / "records"), str(tmp_path / "samples"), tasks="caption", pack=1024, runner="local")
    return tmp_path


def test_load_dataset_decodes_images_of_samples_and_records(built, offline):
    from datasets import load_dataset
    from PIL import Image

    card = (built / "samples" / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n") and MARKER in card
    samples = load_dataset(str(built / "samples"), "samples", split="train", cache_dir=offline)
    assert samples.num_rows == 5
    for row in samples:
        im = row["images"][0]["image"]
        assert isinstance(im, Image.Image) and im.size == (row["images"][0]["width"], row["images"][0]["height"])
    default = load_dataset(str(built / "samples"), split="train", cache_dir=offline)  # samples is the default config
    assert default.num_rows == 5
    records = load_dataset(str(built / "records"), "records", split="train", cache_dir=offline)
    assert [r["image"].size for r in records] == [(40 + i, 30) for i in range(5)]
    seqs = load_dataset(str(built / "samples"), "sequences", split="train", cache_dir=offline)
    assert sum(len(s["sample_ids"]) for s in seqs) == 5


def test_only_manifest_listed_shards_are_configured(built, offline):
    import shutil

    from datasets import load_dataset

    out = built / "samples"
    shutil.copy(out / Dataset(out).shards("samples")[0]["path"], out / "samples" / "part-99999.parquet")
    assert "part-99999" not in (out / "README.md").read_text()
    assert load_dataset(str(out), "samples", split="train", cache_dir=offline).num_rows == 5


def test_a_readme_the_tool_did_not_write_is_left_alone(tmp_path):
    out = tmp_path / "out"
    with DatasetWriter(out) as w:
        w.write("records", records_from_pylist([{"record_id": "a:1", "source": "a", "text": "x"}]))
        w.close()
    assert MARKER in (out / "README.md").read_text()
    (out / "README.md").write_text("my notes")
    with DatasetWriter(out, overwrite=True) as w:
        w.write("records", records_from_pylist([{"record_id": "a:2", "source": "a", "text": "y"}]))
        w.close()
    assert (out / "README.md").read_text() == "my notes" and Dataset(out).rows("records") == 1
