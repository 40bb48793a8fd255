"""One vocabulary of reject reasons: curation/reasons.py, docs/reasons.md and every place a reason is written."""

import ast
import re
from pathlib import Path

import pytest

import curation.reasons as reasons_module
from curation.crawl.download import download_reason
from curation.reasons import REASONS, check_reason

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("curation", "filters", "formats", "jobs")


def test_the_doc_lists_exactly_the_reasons_of_the_module():
    text = (ROOT / "docs" / "reasons.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", text, flags=re.M))
    assert rows == REASONS


def test_every_reason_is_a_snake_case_name_with_a_one_line_meaning():
    for name, meaning in REASONS.items():
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", name), name
        assert meaning and "\n" not in meaning and not meaning.endswith("."), name
    constants = {v for k, v in vars(reasons_module).items() if k.isupper() and isinstance(v, str)}
    assert constants == set(REASONS)


def test_check_reason():
    assert check_reason("box_empty") == "box_empty"
    with pytest.raises(ValueError, match="'no_boxes'"):
        check_reason("no_boxes")


# Where a reason is passed: callee name -> index of the reason argument.
# `self.reject(image_id, reason, ...)` (importers) differs from the bare `reject(reason, ...)` of validate_record.
_REASON_ARG = {"Drop": 0, "Rejected": 0, "InvalidAnnotation": 0, "ImageRejected": 0, "make_reject": 2, "_drop": 1}
_METHOD_REASON_ARG = {"reject": 1, "_reject": 4}


def _reason_args(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name):
            index = {**_REASON_ARG, "reject": 0}.get(f.id)
        elif isinstance(f, ast.Attribute):
            index = _REASON_ARG.get(f.attr, _METHOD_REASON_ARG.get(f.attr))
        else:
            index = None
        if index is None:
            continue
        arg = next((k.value for k in node.keywords if k.arg == "reason"), None)
        if arg is None and len(node.args) > index:
            arg = node.args[index]
        if arg is not None:
            yield node.lineno, arg


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def test_every_reason_written_in_the_source_is_defined():
    """Literal reasons must be listed; constants must be curation.reasons' own; no reason is built with an f-string."""
    bad, seen = [], 0
    for path, tree in _sources():
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "curation.reasons"
            for alias in node.names
        }
        where = path.relative_to(ROOT)
        for line, arg in _reason_args(tree):
            seen += 1
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if arg.value not in REASONS:
                    bad.append(f"{where}:{line}: {arg.value!r}")
            elif isinstance(arg, ast.JoinedStr):
                bad.append(f"{where}:{line}: an f-string reason")
            elif isinstance(arg, ast.Name) and arg.id.isupper():
                if arg.id not in imported or getattr(reasons_module, arg.id, None) not in REASONS:
                    bad.append(f"{where}:{line}: {arg.id} is not a constant of curation.reasons")
    assert seen > 80  # the scan does find the places where reasons are written
    assert not bad, "\n".join(bad)


def test_former_names_are_gone_from_the_source():
    """The duplicates that were unified, and img2dataset's free text as a reason."""
    former = {"no_boxes", "span_outside_text", "missing_image", "missing_size", "invalid_box", "invalid_quad", "download_failed"}
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in former:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "message, reason",
    [
        # urllib, through img2dataset's downloader (its error_message is str(err))
        ("HTTP Error 404: Not Found", "http_error"),
        ("HTTP Error 503: Service Unavailable", "http_error"),
        ("timed out", "timeout"),
        ("The read operation timed out", "timeout"),
        ("<urlopen error timed out>", "timeout"),
        ("<urlopen error [Errno 111] Connection refused>", "connection_error"),
        ("<urlopen error [Errno -2] Name or service not known>", "connection_error"),
        ("<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (_ssl.c:1006)>", "connection_error"),
        ("[Errno 104] Connection reset by peer", "connection_error"),
        ("Remote end closed connection without response", "connection_error"),
        ("IncompleteRead(1024 bytes read, 2048 more expected)", "connection_error"),
        ("Use of image disallowed by X-Robots-Tag directive", "opted_out"),
        ("<urlopen error unknown url type: ftp>", "download_error"),
        ("unknown url type: 'not-a-url'", "download_error"),
        ("hash mismatch", "download_error"),
        ("", "download_error"),
        (None, "download_error"),
        # img2dataset's resizer and OpenCV
        ("Image decoding error", "not_an_image"),
        ("OpenCV(4.10.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:1121: error: (-215:Assertion failed) !buf.empty() in function 'imdecode_'\n", "not_an_image"),
        ("OpenCV(4.10.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:79: error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'\n", "image_too_large"),
        ("image area too large", "image_too_large"),
        ("image too small", "image_too_small"),
        ("aspect ratio too large", "aspect_ratio_too_large"),
        ("blurrer not defined", "download_error"),
        # curation.crawl.fetch: the crawler's own refusals and limits
        ("blocked address: http://10.0.0.1/a.jpg: 10.0.0.1 is private", "blocked_address"),
        ("blocked address: file:///etc/passwd: scheme file: is not http or https", "blocked_address"),
        ("blocked address: rebind.example resolves to 127.0.0.1: 127.0.0.1 is loopback", "blocked_address"),
        ("HTTP Error 403: blocked address: a server's reason phrase", "http_error"),
        ("Use of image disallowed by X-Robots-Tag directive: noai (X-Robots-Tag: noai)", "opted_out"),
        ("body read timed out after 30 s", "timeout"),
        ("body larger than 268435456 bytes", "image_too_large"),
    ],
)
def test_download_reason_maps_img2dataset_messages(message, reason):
    assert download_reason(message) == reason
    assert reason in REASONS
