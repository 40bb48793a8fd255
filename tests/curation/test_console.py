"""Progress per stage and quiet third parties (curation/console.py)."""

import io
import json
import logging
import subprocess
import sys


from curation.console import ProgressNote, ShardProgress


CHATTER = """
import logging, os, subprocess, sys, warnings
from curation.console import third_party_to_log

logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)  # as curation.cli does
with third_party_to_log(sys.argv[1]):
    os.write(1, b"Downloading starting now, check your bandwidth speed (with bwm-ng)\\n")
    os.write(2, b"[core_worker.cc:123] E constructor arguments in the object store\\n")
    subprocess.run([sys.executable, "-c", "import sys; print('worker line'); sys.stderr.write('raylet line\\\\n')"], check=True)
    warnings.warn("a harmless Ray warning")
    logging.getLogger("ray.data").warning("ray's own logger speaks")
    logging.getLogger("open_clip").info("a library on the root logger")
    logging.getLogger("curation.somewhere").info("our progress line")
    print("the command's summary")
os.write(2, b"after the block\\n")
print("last line")
"""

THIRD_PARTY = ("bwm-ng", "core_worker", "worker line", "raylet line", "harmless Ray warning", "ray's own logger",
               "a library on the root logger")


def test_third_party_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path):
    """In a process of its own, with real file descriptors (pytest's capture replaces sys.stdout and sys.stderr)."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    log_path = tmp_path / "logs" / "third-party.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHATTER, str(log_path)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["the command's summary", "last line"]
    assert proc.stderr.splitlines() == ["our progress line", "after the block"]
    logged = log_path.read_text()
    for line in THIRD_PARTY + ("our progress line",):
        assert line in logged
    assert "the command's summary" not in logged


def test_progress_notes_and_log_lines_when_not_a_terminal(tmp_path, caplog):
    staging = tmp_path / "staging"
    ProgressNote(staging, 0)(64, {"download": {"in": 64}, "clip": {"in": 60}}, final=True)
    note = ProgressNote(staging, 1)
    note(30, {"download": {"in": 30}}, final=True)
    note(40, {"download": {"in": 40}})  # within half a second of the last note: not written
    assert json.loads((staging / "progress" / "1.json").read_text()) == {"read": 30, "stages": {"download": 30}}
    progress = ShardProgress(staging, 240, ["download", "clip"], every=0, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="curation"):
        progress.poll()
        progress.finished({"shard_id": 0, "rows_in": 100, "stages": {"download": {"in": 100}, "clip": {"in": 90}}})
    lines = [r.getMessage() for r in caplog.records if r.name == "curation.console"]
    assert lines[0].startswith("progress: read 94/240 · download 94 · clip 60 (")
    assert "ETA" in lines[0] and "rows/s" in lines[0]
    assert lines[-1].startswith("progress: read 130/240 · download 130 · clip 90 (")  # shard 0 final, shard 1 noted


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_on_a_terminal(tmp_path):
    staging = tmp_path / "staging"
    ProgressNote(staging, 0)(64, {"download": {"in": 64}, "clip": {"in": 32}}, final=True)
    screen = _Terminal()
    progress = ShardProgress(staging, 240, ["download", "clip"], stream=screen)
    progress.poll()
    progress.finished({"shard_id": 0, "rows_in": 240, "stages": {"download": {"in": 240}, "clip": {"in": 230}}})
    progress.close()
    text = screen.getvalue()
    assert "download" in text and "clip" in text
    assert "240/240" in text and "230/240" in text and "rows/s" in text
