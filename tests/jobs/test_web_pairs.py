"""The web-pairs job through its commands: download, filter, run (loopback server, real img2dataset)."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from curation.cli import main
from curation.dataset import Dataset
from curation.democorpus import generate_corpus
from jobs.config import config_from_dict
from jobs.demo import DEMO_CLIP_DIR, serve_directory
from jobs.web_pairs import WebPairsConfig

CLIP = ["--clip-model", str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"), "--clip-checkpoint", str(DEMO_CLIP_DIR / "demo_clip.pt")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    items = generate_corpus(root / "www", n=80, seed=5)
    with serve_directory(root / "www") as base:
        urls = root / "urls.csv"
        rows = [{"id": it.item_id, "link": f"{base}/{it.filename}", "text": it.caption,
                 "meta": json.dumps({"planted": it.planted}), "ocr": json.dumps(it.ocr)} for it in items]
        rows.append({"id": "gone", "link": f"{base}/no-such-file.jpg", "text": "a red circle", "meta": "{}", "ocr": "[]"})
        pacsv.write_csv(pa.Table.from_pylist(rows), urls)
        yield root, urls, items


def test_download_then_filter(site, tmp_path, capsys, local_ray):
    root, urls, items = site
    raw, kept = tmp_path / "raw", tmp_path / "kept"
    assert main(["download", str(urls), "--out", str(raw), "--source", "web", "--url-col", "link",
                 "--caption-col", "text", "--id-col", "id"]) == 0
    printed = capsys.readouterr().out
    assert "81 URLs" in printed
    ds = Dataset(raw)
    corrupt = sum(it.planted == "corrupt" for it in items)
    # dropped: the missing file and every corrupt image, each once, counted under its reject's reason
    download_rejects = [r for r in ds.read("rejects").to_pylist() if r["stage"] == "download"]
    assert sorted(r["record_id"] for r in download_rejects) == sorted(
        ["web:gone"] + [f"web:{it.item_id}" for it in items if it.planted == "corrupt"])
    by_reason = Counter(r["reason"] for r in download_rejects)
    assert sum(by_reason.values()) == 1 + corrupt and all(by_reason)
    download = ds.manifest["stages"]["download"]
    assert download == {"in": 81, "out": 80 - corrupt, "seconds": download["seconds"], "dropped": dict(by_reason)}
    assert download["seconds"] > 0
    rejects = {r["record_id"]: r for r in ds.read("rejects").to_pylist()}
    assert rejects["web:gone"]["reason"] == "http_error" and rejects["web:gone"]["detail"].startswith("HTTP Error 404")
    assert ds.read("records", columns=["record_id"]).column(0).to_pylist()[0].startswith("web:demo-")

    assert main(["filter", str(raw), "--out", str(kept), *CLIP, "--min-clip-score", "0.15"]) == 0
    out = Dataset(kept)
    stages = out.manifest["stages"]
    assert stages["basic"]["in"] == 80 - corrupt
    assert stages["basic"]["dropped"] == {"image_too_small": sum(it.planted == "tiny" for it in items)}
    assert stages["clip"]["in"] == stages["basic"]["out"]
    swapped = {f"web:{it.item_id}" for it in items if it.planted == "swapped_caption"}
    dropped = {r["record_id"] for r in out.read("rejects").to_pylist() if r["stage"] == "clip"}
    assert len(dropped & swapped) >= 0.9 * len(swapped)
    assert len(dropped - swapped) <= 0.1 * (stages["clip"]["in"] - len(swapped))
    scores = out.read("records", columns=["clip_score"]).column(0).to_pylist()
    assert all(s is not None and s >= 0.15 for s in scores)


def test_run_from_a_toml_config(site, tmp_path, capsys, local_ray):
    root, urls, _ = site
    job = tmp_path / "job.toml"
    job.write_text(
        f'urls = "{urls}"\nout = "{tmp_path / "out"}"\nsource = "web"\nurl_col = "link"\ncaption_col = "text"\n'
        f'id_col = "id"\nclip_model = "{DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"}"\n'
        f'clip_checkpoint = "{DEMO_CLIP_DIR / "demo_clip.pt"}"\nmin_clip_score = 0.15\n'
        'tasks = ["caption", "ocr"]\npack = 1024\n'
    )
    assert main(["run", str(job)]) == 0
    m = Dataset(tmp_path / "out").manifest
    assert list(m["stages"]) == ["download", "basic", "clip", "build", "pack"]
    assert m["config"]["tasks"] == ["caption", "ocr"] and m["config"]["min_clip_score"] == 0.15
    by_task = m["build"]["samples_by_task"]
    assert by_task["caption"] == m["tables"]["records"]["rows"]
    assert 0 < by_task["ocr"] <= by_task["caption"]  # one per record with text items, carried from the URL list
    assert m["packing"]["max_tokens"] == 1024
    assert "run:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "data,message",
    [
        ({"urls": "u", "out": "o", "min_side": "big"}, "key 'min_side' has str value"),
        ({"urls": "u", "out": "o", "tasks": "caption"}, "key 'tasks'"),
        ({"out": "o"}, "urls"),
    ],
)
def test_config_errors_name_the_key(data, message):
    from curation.errors import InputError

    with pytest.raises(InputError, match=message):
        config_from_dict(WebPairsConfig, data, "job.toml")
