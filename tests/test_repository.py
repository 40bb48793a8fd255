"""The tests run on a plain clone: nothing under tests/ points outside the repository."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Built from pieces so that this file does not itself hold the string it looks for.
OUTSIDE = "." + "./" + "sha" + "red"


def files_naming(folder: Path, needle: str) -> list[str]:
    """Files under folder (any type, __pycache__ left out) whose bytes contain needle, relative to folder."""
    return [
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and needle.encode() in p.read_bytes()
    ]


def test_no_file_under_tests_names_the_folder_outside_the_repository():
    assert files_naming(TESTS, OUTSIDE) == []


def test_the_scan_finds_the_string_when_it_is_there(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "conftest.py").write_text('REAL = Path(__file__).parents[3] / "' + OUTSIDE + '" / "data"\n')
    (tmp_path / "clean.py").write_text('REAL = Path(__file__).parent / "data"\n')
    assert files_naming(tmp_path, OUTSIDE) == ["sub/conftest.py"]


def test_the_real_annotation_excerpts_are_in_the_repository():
    real = TESTS / "data" / "real-annotations"
    names = {p.relative_to(real).as_posix() for p in real.rglob("*") if p.is_file()}
    assert {
        "README.md",
        "coco2017/captions_val2017.sample.json",
        "coco2017/instances_val2017.sample.json",
        "visual_genome/image_data.sample.json",
        "visual_genome/region_descriptions.sample.json",
        "visual_genome/question_answers.sample.json",
        "textcaps/TextCaps_0.1_val.sample.json",
        "textvqa/TextVQA_0.5.1_val.sample.json",
    } <= names
    readme = (real / "README.md").read_text()
    assert "CC BY 4.0" in readme and all(d in readme for d in ("COCO", "Visual Genome", "TextVQA", "TextCaps"))


def test_the_preview_copy_of_the_annotation_columns_matches_the_schema():
    from curation.schema import ANNOTATION_COLUMNS
    from formats.tasks import _ANNOTATIONS

    assert _ANNOTATIONS == ANNOTATION_COLUMNS


def test_only_the_runner_imports_ray():
    import re

    root = Path(__file__).resolve().parents[1]
    importers = sorted(
        str(p.relative_to(root))
        for pkg in ("curation", "filters", "formats", "jobs")
        for p in (root / pkg).rglob("*.py")
        if re.search(r"^\s*(import ray|from ray)\b", p.read_text(), re.M)
    )
    assert importers == ["curation/runner.py"]
