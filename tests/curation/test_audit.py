"""`curate sql` reads the dataset's shards and nothing else (issue 9): no files, no network, no extensions."""

import pytest

from curation.audit import connect
from curation.cli import main
from curation.storage.dataset import DatasetWriter
from curation.schema import records_from_pylist


@pytest.fixture
def dataset(tmp_path):
    out = tmp_path / "ds"
    w = DatasetWriter(out)
    w.write("records", records_from_pylist([{"record_id": f"t:{i}", "source": "t", "width": 64, "height": 64,
                                             "captions": [f"a red circle {i}"]} for i in range(3)]))
    w.close()
    return out


def sql(capsys, *argv):
    code = main(["sql", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


@pytest.mark.parametrize(
    "query",
    [
        "select * from read_csv('/etc/passwd')",
        "select * from read_text('/etc/hostname')",
        "copy (select 1) to '{outside}'",
        "copy (select * from records) to '{inside}'",  # not even into the dataset directory
        "select * from read_parquet('{ds}/records/*.parquet')",  # a glob over the folder is not a listed shard
        "select * from read_parquet('http://127.0.0.1:9/x.parquet')",  # loopback; refused before any connect
        "select * from read_parquet('s3://bucket/x.parquet')",
        "attach '{outside}.db'",
        "install httpfs",
        "load httpfs",
        "set enable_external_access = true",
        "set allowed_directories = ['/']",
        "set autoinstall_known_extensions = true",
    ],
)
def test_queries_reaching_beyond_the_dataset_fail_with_one_line(dataset, tmp_path, capsys, query):
    outside, inside = tmp_path / "x.csv", dataset / "x.csv"
    code, out, err = sql(capsys, dataset, query.format(outside=outside, inside=inside, ds=dataset))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("curate sql: error: SQL")
    assert not outside.exists() and not inside.exists() and not (tmp_path / "x.csv.db").exists()


def test_the_refusal_says_how_to_allow_more(dataset, capsys):
    code, _, err = sql(capsys, dataset, "select * from read_csv('/etc/passwd')")
    assert code == 2
    assert "Permission Error" in err[0] and "--allow-path" in err[0]


def test_allow_path_opens_one_more_file_or_folder(dataset, tmp_path, capsys):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "labels.csv").write_text("record_id,label\nt:1,circle\n")
    query = f"select r.record_id, label from records r join read_csv('{extra / 'labels.csv'}') l using (record_id)"
    code, out, _ = sql(capsys, dataset, query, "--csv", "--allow-path", extra)
    assert code == 0 and out.splitlines() == ["record_id,label", "t:1,circle"]
    code, out, _ = sql(capsys, dataset, query, "--csv", "--allow-path", extra / "labels.csv")
    assert code == 0 and out.splitlines()[1] == "t:1,circle"
    code, _, err = sql(capsys, dataset, query, "--csv")  # without it: refused
    assert code == 2 and "Permission Error" in err[0]


def test_a_relative_dataset_path_works(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = sql(capsys, "ds", "select count(*) from records", "--csv")
    assert code == 0 and out.splitlines()[1] == "3"


def test_the_connection_keeps_json_and_the_views(dataset):
    con = connect(dataset)
    assert con.execute("select count(*) from records").fetchone() == (3,)
    assert con.execute("""select json_extract_string('{"a": 1}', '$.a')""").fetchone() == ("1",)  # built in, no autoload
    settings = dict(con.execute("select name, value from duckdb_settings() where name in "
                                "('enable_external_access', 'autoinstall_known_extensions', 'autoload_known_extensions', 'lock_configuration')").fetchall())
    assert settings == {"enable_external_access": "false", "autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false", "lock_configuration": "true"}
