import csv
import io
import json

import pytest

from curation.cli import main
from curation.storage.dataset import DatasetWriter
from curation.schema import records_from_pylist, rejects_from_pylist, make_reject
from jobs.demo import DEMO_CLIP_DIR


@pytest.fixture
def small_dataset(tmp_path):
    out = tmp_path / "ds"
    w = DatasetWriter(out)
    w.write("records", records_from_pylist([{"record_id": f"t:{i}", "source": "t", "width": 64, "height": 64,
                                             "captions": [f"a red circle {i}"]} for i in range(3)]))
    w.write("rejects", rejects_from_pylist([make_reject("t:9", "basic", "image_too_small", "8x8 < 32", "t"),
                                            make_reject("t:8", "download", "http_error", "HTTP Error 404: Not Found", "t")]))
    w.close()
    return out


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_csv_counts_match_the_manifest(small_dataset, capsys):
    code, out, _ = run_cli(capsys, "sql", str(small_dataset), "select count(*) as n from records", "--csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    manifest = json.loads((small_dataset / "manifest.json").read_text())
    assert rows == [["n"], [str(manifest["tables"]["records"]["rows"])]]


def test_sql_table_view_of_rejects(small_dataset, capsys):
    code, out, _ = run_cli(capsys, "sql", str(small_dataset), "select stage, reason, count(*) as n from rejects group by all order by stage")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["stage", "reason", "n"]
    assert "image_too_small" in lines[2] and "http_error" in lines[3]


def test_sql_sees_empty_samples_view(small_dataset, capsys):
    code, out, _ = run_cli(capsys, "sql", str(small_dataset), "select count(*) from samples", "--csv")
    assert code == 0 and out.splitlines()[1] == "0"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sql", "{tmp}/nope", "select 1"], "no such dataset directory"),
        (["sql", "{ds}", "select nonsense from nowhere"], "SQL error"),
        (["download", "{tmp}/missing.parquet", "--out", "{tmp}/o"], "missing.parquet: not found"),
        (["download", "{tmp}/links.csv", "--out", "{tmp}/o"], "no URL column 'url'"),
        (["filter", "{ds}", "--out", "{tmp}/o", "--clip-model", "{cfg}", "--clip-checkpoint", "{tmp}/broken.pt"], "cannot load CLIP weights"),
        (["filter", "{ds}", "--out", "{tmp}/o", "--clip-model", "{cfg}", "--clip-checkpoint", "{tmp}/absent.pt"], "checkpoint not found"),
        # a real torch checkpoint of the wrong model passes the driver's torch-free check and fails where
        # the model loads (a shard task): still one line, exit 2
        (["filter", "{ds}", "--out", "{tmp}/o", "--clip-model", "{cfg}", "--clip-checkpoint", "{tmp}/wrong.pt"], "cannot load CLIP weights"),
        (["filter", "{tmp}/nope", "--out", "{tmp}/o"], "no such dataset directory"),
        (["run", "{tmp}/job.toml"], "unknown key 'urlz'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, small_dataset, capsys):
    (tmp_path / "links.csv").write_text("link,caption\nhttp://127.0.0.1:1/a.jpg,a cat\n")
    (tmp_path / "broken.pt").write_bytes(b"\x00garbage")
    if "wrong.pt" in " ".join(argv):
        import torch

        torch.save({"not_a_clip_weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    (tmp_path / "job.toml").write_text('urlz = "x.parquet"\nout = "o"\n')
    subs = {"tmp": str(tmp_path), "ds": str(small_dataset), "cfg": str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json")}
    code, out, err = run_cli(capsys, *[a.format(**subs) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert lines[0].startswith(f"curate {argv[0]}: error:")


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_sql_on_a_missing_or_truncated_shard_is_one_line_naming_it(small_dataset, capsys, damage):
    shard = small_dataset / json.loads((small_dataset / "manifest.json").read_text())["tables"]["records"]["shards"][0]["path"]
    if damage == "delete":
        shard.unlink()
    else:
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    code, out, err = run_cli(capsys, "sql", str(small_dataset), "select count(*) from rejects")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"curate sql: error: {shard}: ")
    assert ("missing" if damage == "delete" else "truncated") in lines[0]


def test_a_bug_shows_its_traceback_and_exits_1(small_dataset, tmp_path, capsys, monkeypatch):
    from formats.build import BuildSamples

    def boom(self, batch):
        raise RuntimeError("boom")

    monkeypatch.setattr(BuildSamples, "__call__", boom)
    code, out, err = run_cli(capsys, "build", str(small_dataset), "--out", str(tmp_path / "o"))
    assert code == 1
    assert "Traceback (most recent call last)" in err and 'raise RuntimeError("boom")' in err
    assert err.strip().splitlines()[-1] == "curate build: internal error (a bug, not bad input): RuntimeError: boom"


def test_input_error_is_one_line_and_verbose_adds_the_traceback(tmp_path, capsys):
    code, _, err = run_cli(capsys, "sql", str(tmp_path / "nope"), "select 1")
    assert code == 2 and err == f"curate sql: error: {tmp_path / 'nope'}: no such dataset directory\n"
    code, _, err = run_cli(capsys, "-v", "sql", str(tmp_path / "nope"), "select 1")
    assert code == 2
    assert "Traceback (most recent call last)" in err and "ManifestError" in err
    assert err.strip().splitlines()[-1] == f"curate sql: error: {tmp_path / 'nope'}: no such dataset directory"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["build", "{ds}", "--out", "{tmp}/afile"], "--out {tmp}/afile: exists and is not a directory"),
        (["filter", "{ds}", "--out", "{tmp}/o", "--min-side", "0"], "min_side must be >= 1"),
        (["filter", "{ds}", "--out", "{tmp}/o", "--shard-rows", "0"], "--shard-rows must be positive, got 0"),
        (["filter", "{ds}", "--out", "{tmp}/o", "--clip-model", "{tmp}/bad.json"], "not a JSON open_clip model config"),
        (["demo", "--out", "{tmp}/d", "--images", "5"], "--images must be at least 16"),
        (["run", "{tmp}/bad-format.toml"], "unknown format 'qwen3-vl'"),
        (["run", "{tmp}/bad-task.toml"], "unknown task 'captions'"),
        (["export", "{ds}", "--to", "ms-swift", "--out", "{tmp}/e.json", "--tasks", "nope"], "unknown task 'nope'"),
        (["download", "{tmp}/structs.parquet", "--out", "{tmp}/o"], "column 'url' of type struct"),
    ],
)
def test_more_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, small_dataset, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "afile").write_text("x")
    (tmp_path / "bad.json").write_text("{not json")
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:1/a.jpg,a cat\n")
    (tmp_path / "bad-format.toml").write_text(f'urls = "{urls}"\nout = "{tmp_path / "o"}"\nformat = "qwen3-vl"\n')
    (tmp_path / "bad-task.toml").write_text(f'urls = "{urls}"\nout = "{tmp_path / "o"}"\ntasks = ["captions"]\n')
    pq.write_table(pa.table({"url": [{"a": 1}], "caption": ["x"]}), tmp_path / "structs.parquet")
    subs = {"tmp": str(tmp_path), "ds": str(small_dataset)}
    code, out, err = run_cli(capsys, *[a.format(**subs) for a in argv])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"curate {argv[0]}: error:") and message.format(**subs) in lines[0]
    assert not (tmp_path / "o").exists()  # nothing written before the check
