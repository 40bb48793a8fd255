"""No silent destruction: outputs that are inputs, concurrent runs, killed reruns, damaged shards.

Each run goes through the real `curate` command line, in this process or as
a child process (killed with SIGKILL where the test is about a crash).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.storage.dataset import Dataset, DatasetWriter
from curation.schema import records_from_pylist

ROOT = Path(__file__).resolve().parents[2]


def _jpeg(i: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (i % 256, 80, 160)).save(buf, format="JPEG", quality=60)
    return buf.getvalue()


def _records(n: int, start: int = 0):
    return records_from_pylist(
        [{"record_id": f"t:{i}", "source": "t", "image": _jpeg(i), "width": 64, "height": 48,
          "captions": [f"a red circle number {i}"]} for i in range(start, start + n)]
    )


@pytest.fixture
def records_dir(tmp_path):
    w = DatasetWriter(tmp_path / "in", target_shard_bytes=4_000)
    for k in range(3):
        w.write("records", _records(40, start=40 * k))
    w.close()
    return tmp_path / "in"


def _state(d: Path) -> dict[str, bytes]:
    """Every file of a dataset directory (but the lock and staging folder) and its bytes."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and ".curate" not in p.parts}


def _curate(*argv, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "curation.cli", *map(str, argv)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"curate {command}: error:")
    return lines[0]


@pytest.mark.parametrize("command,out", [("build", "{d}"), ("build", "{d}/sub"), ("filter", "{d}"), ("filter", "{d}/sub")])
def test_an_output_that_is_or_lies_inside_the_input_is_refused(records_dir, capsys, command, out):
    before = _state(records_dir)
    manifest = json.loads((records_dir / "manifest.json").read_text())
    code = main([command, str(records_dir), "--out", out.format(d=records_dir), "--overwrite"])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert "input" in line
    assert _state(records_dir) == before
    assert json.loads((records_dir / "manifest.json").read_text())["tables"] == manifest["tables"]
    assert Dataset(records_dir, verify=True).rows("records") == 120


def test_a_non_empty_output_needs_overwrite(records_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", str(records_dir), "--out", str(out)]) == 0
    first = _state(out)
    assert main(["build", str(records_dir), "--out", str(out), "--tasks", "caption"]) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err, "build")
    assert _state(out) == first
    assert main(["build", str(records_dir), "--out", str(out), "--overwrite", "--format", "qwen2-vl"]) == 0
    assert Dataset(out, verify=True).manifest["config"]["format"] == "qwen2-vl"


KILL_AT_CLOSE = textwrap.dedent(
    """
    import os, signal, sys
    from curation.storage import dataset
    from curation.cli import main

    def die(self, *a, **k):  # the new run is complete in staging, the old one not yet replaced
        print("staged", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    dataset.DatasetWriter._swap_in = die
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_killed_overwrite_rerun_leaves_the_old_dataset(records_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["build", str(records_dir), "--out", str(out)]) == 0
    before = _state(out)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "TMPDIR": str(tmp)}
    proc = subprocess.run(
        # -v: the marker that die() prints stays on stderr (without it, a command's stderr goes to its third-party log)
        [sys.executable, "-c", KILL_AT_CLOSE, "-v", "build", str(records_dir), "--out", str(out), "--overwrite", "--format", "qwen2-vl"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not list(tmp.iterdir())  # work files live in the output's staging directory, not in /tmp
    assert "staged" in proc.stderr
    staging = out / ".curate" / "staging"
    assert list((staging / "samples").glob("part-*.parquet")) and (staging / "manifest.json").is_file()
    assert _state(out) == before
    ds = Dataset(out, verify=True)
    assert ds.manifest["config"]["format"] == "qwen-vl" and ds.read("samples").num_rows == 120
    # a rerun takes the lock the dead process held, cleans its staging and completes
    assert main(["build", str(records_dir), "--out", str(out), "--overwrite", "--format", "qwen2-vl"]) == 0
    assert Dataset(out, verify=True).manifest["config"]["format"] == "qwen2-vl"
    assert not (out / ".curate" / "staging").exists()


def test_two_concurrent_builds_into_one_output(records_dir, tmp_path):
    outcomes = []
    for trial in range(10):
        out = tmp_path / f"out{trial}"
        procs = [_curate("build", records_dir, "--out", out, "--batch-size", "8") for _ in range(2)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 2], results
        loser = next(err for code, _, err in results if code == 2)
        line = _one_error_line(loser, "build")
        outcomes.append("pid" if "in use by another curate run (pid " in line else "not empty")
        assert "not empty" in line or "in use by another curate run (pid " in line
        assert main(["validate", str(out)]) == 0
        assert Dataset(out, verify=True).rows("samples") == 120
    assert "pid" in outcomes  # the runs really overlapped at least once


def test_damaged_shards_are_errors_naming_the_shard(records_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", str(records_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    shard = out / "samples" / "part-00000.parquet"
    good = shard.read_bytes()
    flipped = bytearray(good)
    at = len(flipped) // 5  # inside the data pages, before the footer
    flipped[at:at + 64] = bytes(b ^ 0x5A for b in flipped[at:at + 64])
    shard.write_bytes(bytes(flipped))
    assert main(["validate", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "samples/part-00000.parquet:" in printed and "sha256" in printed

    # the same shard with fewer rows than the manifest says: an error on every read
    table = pq.read_table(__import__("io").BytesIO(good))
    pq.write_table(table.slice(0, table.num_rows - 10), shard)
    for argv in (["validate", str(out)], ["sql", str(out), "select count(*) from samples"],
                 ["export", str(out), "--to", "qwen-vl-json", "--out", str(tmp_path / "x.json")],
                 ["build", str(out), "--out", str(tmp_path / "again")]):
        shard_name = "samples/part-00000.parquet" if argv[0] != "build" else "records/part-d00000.parquet"
        if argv[0] == "build":  # build reads records: damage one of those instead
            rshard = records_dir / "records" / "part-d00000.parquet"
            rt = pq.read_table(rshard)
            pq.write_table(rt.slice(1), rshard)
            argv = ["build", str(records_dir), "--out", str(tmp_path / "again")]
        code = main(argv)
        err = capsys.readouterr()
        assert code in (1, 2), argv
        text = err.out + err.err
        assert shard_name in text and "the manifest says" in text, (argv, text)
