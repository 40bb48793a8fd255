import csv
import io
import json

import pytest

from curation.cli import main
from curation.dataset import DatasetWriter
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
        (["download", "{tmp}/missing.parquet", "--out", "{tmp}/o"], "missing.parquet: URL list not found"),
        (["download", "{tmp}/links.csv", "--out", "{tmp}/o"], "no URL column 'url'"),
        (["filter", "{ds}", "--out", "{tmp}/o", "--clip-model", "{cfg}", "--clip-checkpoint", "{tmp}/broken.pt"], "cannot load CLIP weights"),
        (["filter", "{ds}", "--out", "{tmp}/o", "--clip-model", "{cfg}", "--clip-checkpoint", "{tmp}/absent.pt"], "checkpoint not found"),
        (["filter", "{tmp}/nope", "--out", "{tmp}/o"], "no such dataset directory"),
        (["run", "{tmp}/job.toml"], "unknown key 'urlz'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, small_dataset, capsys):
    (tmp_path / "links.csv").write_text("link,caption\nhttp://127.0.0.1:1/a.jpg,a cat\n")
    (tmp_path / "broken.pt").write_bytes(b"\x00garbage")
    (tmp_path / "job.toml").write_text('urlz = "x.parquet"\nout = "o"\n')
    subs = {"tmp": str(tmp_path), "ds": str(small_dataset), "cfg": str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json")}
    code, out, err = run_cli(capsys, *[a.format(**subs) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert lines[0].startswith(f"curate {argv[0]}: error:")
