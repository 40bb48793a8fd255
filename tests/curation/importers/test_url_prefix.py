"""--images as a URL prefix: images fetched through the download path (img2dataset) from loopback."""

import json
from collections import Counter

from curation.crawl.fetch import FetchPolicy
from curation.importers.jsonstream import load_json
from jobs.demo import serve_directory


def test_images_from_a_url_prefix(real, tmp_path, make_images, run_ingest):
    path = real / "coco2017" / "captions_val2017.sample.json"
    listed = {im["id"]: im for im in load_json(path)["images"]}
    # the excerpt's captions reference 2 listed images; serve only one of them
    ids = sorted({a["image_id"] for a in load_json(path)["annotations"] if a["image_id"] in listed})
    keep, gone = listed[ids[0]], listed[ids[1]]
    make_images(tmp_path / "www" / "val2017", {keep["file_name"]: (keep["width"], keep["height"])})
    with serve_directory(tmp_path / "www") as base:
        manifest, records, rejects = run_ingest({"coco-captions": [path]}, f"{base}/val2017",
                                                fetch=FetchPolicy(allow_private_network=True))
    assert [r["record_id"] for r in records] == [f"coco:{keep['id']}"]
    (rec,) = records
    assert rec["url"] == f"{base}/val2017/{keep['file_name']}" and (rec["width"], rec["height"]) == (keep["width"], keep["height"])
    missing = [r for r in rejects if r["reason"] == "image_missing"]
    assert [r["record_id"] for r in missing] == [f"coco:{gone['id']}"]
    assert f"{base}/val2017/{gone['file_name']}" in missing[0]["detail"] and "404" in missing[0]["detail"]
    assert Counter(r["reason"] for r in rejects) == {"image_unknown": 91, "no_annotations": 98, "image_missing": 1}
    assert "download" in manifest["timings"]


def _coco(path, names):
    images = [{"id": i + 1, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)]
    anns = [{"id": 100 + i, "image_id": i + 1, "caption": f"a picture {i}"} for i in range(len(names))]
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def test_unsafe_file_names_are_refused_before_any_request(tmp_path, run_ingest):
    from netfixtures import FaultServer

    names = ["img/ok.jpg", "../secret.jpg", "img/../../etc/passwd", "/etc/passwd", "img\\..\\..\\x.jpg"]
    path = _coco(tmp_path / "captions.json", names)
    with FaultServer() as server:
        manifest, records, rejects = run_ingest({"coco-captions": [path]}, server.base, fetch=FetchPolicy(allow_private_network=True))
    assert [r["record_id"] for r in records] == ["coco:1"]
    assert sorted((r["record_id"], r["reason"]) for r in rejects) == [
        ("coco:2", "unsafe_file_name"), ("coco:3", "unsafe_file_name"), ("coco:4", "unsafe_file_name"), ("coco:5", "unsafe_file_name")]
    assert all(r["stage"] == "images" for r in rejects)
    assert [p for p, _ in server.log] == ["/img/ok.jpg"]  # the server's own log: nothing else was asked for


def test_a_url_prefix_goes_through_the_address_policy(tmp_path, run_ingest):
    from netfixtures import FaultServer

    path = _coco(tmp_path / "captions.json", ["img/a.jpg", "img/b.jpg", "noai.jpg"])
    with FaultServer() as server:
        _, records, rejects = run_ingest({"coco-captions": [path]}, server.base, out=tmp_path / "refused")  # default policy
        assert records == [] and {r["reason"] for r in rejects} == {"blocked_address"}
        assert "127.0.0.1 is loopback" in rejects[0]["detail"]
        assert server.log == []
        _, records, rejects = run_ingest({"coco-captions": [path]}, server.base, out=tmp_path / "allowed",
                                         fetch=FetchPolicy(allow_private_network=True))
        assert sorted(r["record_id"] for r in records) == ["coco:1", "coco:2"]
        assert [(r["record_id"], r["reason"]) for r in rejects] == [("coco:3", "opted_out")]  # X-Robots-Tag: noai
        assert {h["User-Agent"] for _, h in server.log} == {FetchPolicy().user_agent}


def test_ingest_command_takes_the_fetch_options(tmp_path, capsys):
    from curation.cli import main
    from curation.storage.dataset import Dataset
    from netfixtures import FaultServer

    path = _coco(tmp_path / "captions.json", ["img/a.jpg", "noai.jpg"])
    with FaultServer() as server:
        argv = ["ingest", f"coco-captions={path}", "--images", server.base, "--runner", "local"]
        assert main([*argv, "--out", str(tmp_path / "a")]) == 0
        assert server.log == []
        assert main([*argv, "--out", str(tmp_path / "b"), "--allow-private-network", "--disallowed-header-directives", "",
                     "--user-agent-token", "testbot"]) == 0
        assert sorted(p for p, _ in server.log) == ["/img/a.jpg", "/noai.jpg"]
        assert server.log[0][1]["User-Agent"].startswith("testbot/")
    assert Dataset(tmp_path / "b").rows("records") == 2  # the opt-out is off: both kept
    rejects = Dataset(tmp_path / "a").read("rejects").to_pylist()
    assert {r["reason"] for r in rejects} == {"blocked_address"}
