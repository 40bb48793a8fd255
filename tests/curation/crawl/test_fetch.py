"""Downloading like a trustworthy crawler (issue 9), against a loopback fault server.

The in-process tests run img2dataset's engine through `curation.crawl.fetch` with
`net_guard` on: no name goes to DNS, and any connect() outside 127.0.0.0/8 and
::1 fails the test before it happens. Private, link-local and metadata
addresses appear only as answers of the stub resolver or as address literals
that the policy must refuse before connecting. A "public" host is the stub
name PUBLIC_NAME, whose stand-in address the guard connects to the loopback
fault server instead. The end-to-end tests through Ray and the CLI use
loopback spellings only.
"""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.crawl.fetch import FetchPolicy, fetching
from curation.storage.dataset import Dataset
from curation.crawl.download import FromImg2dataset, Img2datasetReader
from curation.crawl.urls import read_url_list
from curation.runner import InputShard
from netfixtures import PUBLIC_NAME, PUBLIC_STANDIN, FaultServer, NetGuard

MAX_PIXELS = 10_000_000


@pytest.fixture
def fault():
    with FaultServer(slow=2.5) as server:
        yield server


@pytest.fixture
def net_guard(monkeypatch, fault):
    """The guard with the test names: a public host (served by `fault`), and names of refused addresses."""
    names = {
        PUBLIC_NAME: PUBLIC_STANDIN,
        "rebind.example": "127.0.0.1",  # a name that resolves to loopback
        "private.example": "10.1.2.3",
        "corp.example": "172.16.9.9",
        "router.example": "192.168.1.1",
        "metadata.example": "169.254.169.254",
        "mapped.example": "::ffff:127.0.0.1",
        "v6local.example": "::1",
    }
    guard = NetGuard(monkeypatch, names, public_port=fault.port)
    yield guard
    assert guard.refused == [], f"connects outside loopback were attempted: {guard.refused}"


def download(tmp_path, urls, policy=None, *, timeout=1, retries=2, threads=8):
    """URLs -> (rows of FromImg2dataset by record_id, the shard's fetch counts, seconds), in this process."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "urls.jsonl"
    src.write_text("".join(json.dumps({"url": u, "caption": f"picture {i}"}) + "\n" for i, u in enumerate(urls)))
    table = read_url_list(src, "t")
    shard_file = tmp_path / "shard.parquet"
    pq.write_table(table, shard_file)
    reader = Img2datasetReader(threads=threads, timeout=timeout, retries=retries, max_pixels=MAX_PIXELS,
                               policy=policy or FetchPolicy(backoff=0.1, max_retry_wait=5.0, body_timeout=1.5))
    t0 = time.monotonic()
    batches = reader(InputShard(0, str(shard_file), None, table.num_rows, 0))
    rows = []
    while True:
        try:
            batch = next(batches)
        except StopIteration as end:
            counts = end.value
            break
        rows += FromImg2dataset("t", MAX_PIXELS)(batch).to_pylist()
    by_url = {}
    for r in rows:
        by_url.setdefault(r["url"], []).append(r)
    assert len(rows) == len(urls)
    return by_url, counts, time.monotonic() - t0


def outcome(rows):
    """How the one row of a URL ended (of a URL listed more than once: its first, downloaded row)."""
    (r,) = [r for r in rows if r["reject_reason"] != "duplicate_url"] or rows[:1]
    return r["reject_reason"] or "record"


ROUTES = {  # path on the fault server -> how the URL must end
    "/img/a.jpg": "record",
    "/404.jpg": "http_error",
    "/500.jpg": "http_error",
    "/flaky.jpg": "record",  # 503 once: retried
    "/429.jpg": "record",  # 429 with Retry-After: 1 once: retried after a second
    "/429-date.jpg": "record",  # Retry-After as an HTTP date
    "/429-forever.jpg": "http_error",  # Retry-After: 3600 > max_retry_wait: not retried
    "/reset.jpg": "connection_error",
    "/timeout.jpg": "timeout",
    "/drip.jpg": "timeout",  # a byte every 0.2 s: the body deadline ends it
    "/cut-body.jpg": "connection_error",  # Content-Length promised more
    "/truncated.jpg": {"not_an_image", "image_truncated"},  # a complete answer holding 60% of a JPEG
    "/html.jpg": "not_an_image",
    "/bomb.png": "image_too_large",
    "/noai.jpg": "opted_out",
    "/noimageai-for-us.jpg": "opted_out",
    "/noai-other-bot.jpg": "record",  # addressed to another crawler
    "/nofollow.jpg": "record",  # not an opt-out directive
    "/redirect/image": "record",
    "/redirect/ten": "blocked_address",  # to http://10.0.0.1/: refused before any connect
    "/redirect/private-name": "blocked_address",  # to a name that resolves to 10.1.2.3
    "/redirect/loopback": "blocked_address",  # to http://127.0.0.1:PORT/
    "/redirect/file": "blocked_address",  # to file:///etc/passwd
    "/redirect/metadata": "blocked_address",  # to http://169.254.169.254/
}


def test_every_url_ends_as_a_record_or_a_reject_with_the_right_reason(tmp_path, fault, net_guard):
    pub = f"http://{PUBLIC_NAME}:{fault.port}"
    fault.redirects.update({
        "image": f"{pub}/img/r.jpg", "ten": "http://10.0.0.1/x.jpg", "private-name": f"http://private.example:{fault.port}/img/p.jpg",
        "loopback": f"http://127.0.0.1:{fault.port}/img/l.jpg", "file": "file:///etc/passwd",
        "metadata": "http://169.254.169.254/latest/meta-data/",
    })
    urls = [pub + path for path in ROUTES]
    dups = [f"HTTP://{PUBLIC_NAME.upper()}:{fault.port}/img/a.jpg#again", pub + "/img/a.jpg", pub + "/bomb.png"]
    by_url, counts, seconds = download(tmp_path, urls + dups)

    for path, expected in ROUTES.items():
        got = outcome(by_url[pub + path])
        assert got in (expected if isinstance(expected, set) else {expected}), (path, got, by_url[pub + path][0]["reject_detail"])
    # duplicates: downloaded once, rejected naming the kept record (the earliest row)
    kept_a = by_url[pub + "/img/a.jpg"]
    assert sorted(r["reject_reason"] or "record" for r in kept_a) == ["duplicate_url", "record"]
    first_a = next(r for r in kept_a if r["reject_reason"] is None)
    assert first_a["record_id"] == "t:0"
    assert next(r for r in kept_a if r["reject_reason"])["reject_detail"].startswith("same URL as t:0")
    assert outcome(by_url[dups[0]]) == "duplicate_url" and "t:0" in by_url[dups[0]][0]["reject_detail"]
    assert sorted(r["reject_reason"] for r in by_url[pub + "/bomb.png"]) == ["duplicate_url", "image_too_large"]
    assert fault.hits["/img/a.jpg"] == 1 and fault.hits["/bomb.png"] == 1

    # bombs and opted-out images are never kept
    for path in ("/bomb.png", "/noai.jpg", "/noimageai-for-us.jpg"):
        assert all(r["image"] is None for r in by_url[pub + path]), path
    assert "noai" in by_url[pub + "/noai.jpg"][0]["reject_detail"]
    assert "noimageai" in by_url[pub + "/noimageai-for-us.jpg"][0]["reject_detail"]

    # retries: 5xx and timeouts three times (retries=2), 404 and a too-long Retry-After once
    assert fault.hits["/500.jpg"] == 3 and fault.hits["/timeout.jpg"] == 3 and fault.hits["/reset.jpg"] == 3
    assert fault.hits["/404.jpg"] == 1 and fault.hits["/429-forever.jpg"] == 1 and fault.hits["/cut-body.jpg"] == 1
    assert fault.hits["/flaky.jpg"] == 2 and fault.hits["/429.jpg"] == 2
    first, second = fault.times["/429.jpg"]
    assert second - first >= 0.95  # Retry-After: 1 honoured (the backoff alone would be 0.1 s)
    assert counts["retries_by_host"][PUBLIC_NAME] >= 2 + 2 + 2 + 2 + 1 + 1 + 1

    # redirects: the image followed; nothing requested from a refused target, nothing connected off loopback
    assert fault.hits["/img/r.jpg"] == 1
    assert "/img/l.jpg" not in fault.hits and "/img/p.jpg" not in fault.hits
    assert "10.0.0.1" not in net_guard.resolved  # a literal is refused before any lookup
    assert by_url[pub + "/redirect/private-name"][0]["reject_detail"].endswith("private.example resolves to 10.1.2.3: 10.1.2.3 is private")
    assert all(addr == ("127.0.0.1", fault.port) for addr in net_guard.connects)

    # identity: every request named the tool, its version and URL
    agents = {headers.get("User-Agent") for _, headers in fault.log}
    assert agents == {FetchPolicy().user_agent} == {"qwen-vl-curation/0.1"}
    assert FetchPolicy(contact="https://example.org/crawler").user_agent == "qwen-vl-curation/0.1 (+https://example.org/crawler)"
    # per-host counts: every request the server logged, counted against the name asked for
    assert counts["requests_by_host"] == {PUBLIC_NAME: len(fault.log)}
    assert seconds < 60  # no URL hangs the run (a timeout, a drip and three retries each included)


def test_opt_outs_are_configurable(tmp_path, fault, net_guard):
    pub = f"http://{PUBLIC_NAME}:{fault.port}"
    urls = [pub + p for p in ("/noai.jpg", "/noimageai-for-us.jpg", "/noai-other-bot.jpg")]
    none, _, _ = download(tmp_path / "none", urls, FetchPolicy(disallowed_header_directives=()), retries=0)
    assert [outcome(none[u]) for u in urls] == ["record", "record", "record"]
    fault.hits.clear()
    only_noimageai, _, _ = download(tmp_path / "some", urls, FetchPolicy(disallowed_header_directives=("NoImageAI",)), retries=0)
    assert [outcome(only_noimageai[u]) for u in urls] == ["record", "opted_out", "record"]
    # another token: the header addressed to qwen-vl-curation no longer applies, the one to otherbot does
    other, _, _ = download(tmp_path / "other", urls, FetchPolicy(user_agent_token="otherbot"), retries=0)
    assert [outcome(other[u]) for u in urls] == ["opted_out", "record", "opted_out"]
    assert fault.log[-1][1]["User-Agent"] == "otherbot/0.1"


def test_the_ssrf_list_is_refused_before_any_connect(tmp_path, fault, net_guard):
    """Issue 9's list, without allow_private_network: each a blocked_address reject; the server sees one request."""
    port = fault.port
    fault.redirects["loopback"] = f"http://127.0.0.1:{port}/img/stolen.jpg"
    urls = [
        "file:///etc/passwd",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
        f"http://localhost:{port}/img/1.jpg",
        f"http://127.0.0.1:{port}/img/2.jpg",
        f"http://2130706433:{port}/img/3.jpg",
        f"http://0x7f000001:{port}/img/4.jpg",
        f"http://[::1]:{port}/img/5.jpg",
        f"http://[::ffff:127.0.0.1]:{port}/img/6.jpg",
        "http://10.0.0.1/img/7.jpg",
        "http://10.255.0.9:8080/img/8.jpg",
        "http://172.16.0.1/img/9.jpg",
        "http://172.31.200.1/img/10.jpg",
        "http://192.168.1.1/img/11.jpg",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        f"http://rebind.example:{port}/img/12.jpg",  # a name that resolves to 127.0.0.1
        "http://private.example/img/13.jpg",  # ... to 10.1.2.3
        "http://corp.example/img/14.jpg",  # ... to 172.16.9.9
        "http://router.example/img/15.jpg",  # ... to 192.168.1.1
        "http://metadata.example/latest/meta-data/",  # ... to 169.254.169.254
        f"http://mapped.example:{port}/img/16.jpg",  # ... to ::ffff:127.0.0.1
        f"http://v6local.example:{port}/img/17.jpg",  # ... to ::1
        f"http://{PUBLIC_NAME}:{port}/redirect/loopback",  # a public-looking name redirecting to 127.0.0.1
    ]
    by_url, counts, _ = download(tmp_path, urls, FetchPolicy(), retries=2)
    for url in urls:
        assert outcome(by_url[url]) == "blocked_address", (url, by_url[url][0]["reject_detail"])
        assert by_url[url][0]["reject_detail"].startswith("blocked address: ")
    # the server's own log: one request, the public-looking hop; nothing of the loopback spellings
    assert [p for p, _ in fault.log] == ["/redirect/loopback"]
    assert net_guard.connects == [("127.0.0.1", port)]  # that hop, through the stand-in; nothing else connected
    assert counts["requests_by_host"] == {PUBLIC_NAME: 1} and "retries_by_host" in counts
    assert not counts["retries_by_host"]  # a refusal is never retried
    assert sum(counts["blocked_by_host"].values()) == len(urls)


def test_allow_private_network_fetches_from_loopback(tmp_path, fault, net_guard):
    urls = [f"http://127.0.0.1:{fault.port}/img/a.jpg", f"http://2130706433:{fault.port}/img/b.jpg",
            f"http://rebind.example:{fault.port}/img/c.jpg", "file:///etc/passwd"]
    by_url, counts, _ = download(tmp_path, urls, FetchPolicy(allow_private_network=True), retries=0)
    assert [outcome(by_url[u]) for u in urls] == ["record", "record", "record", "blocked_address"]  # still http(s) only
    assert counts["requests_by_host"] == {"127.0.0.1": 1, "2130706433": 1, "rebind.example": 1}


def test_at_most_max_per_host_requests_in_flight(tmp_path, fault, net_guard):
    urls = [f"http://{PUBLIC_NAME}:{fault.port}/slow-host/{i}.jpg" for i in range(10)]
    by_url, counts, _ = download(tmp_path, urls, FetchPolicy(max_per_host=2), retries=0, threads=8)
    assert all(outcome(by_url[u]) == "record" for u in urls)
    assert fault.max_in_flight == 2
    assert counts["requests_by_host"] == {PUBLIC_NAME: 10}


def test_fetching_restores_img2dataset_and_refuses_an_engine_it_cannot_guard(monkeypatch):
    import img2dataset.downloader as d

    before = (d.urllib, d.download_image_with_retry)
    with pytest.raises(KeyError):
        with fetching(FetchPolicy()):
            assert d.urllib is not before[0]
            raise KeyError("boom")
    assert (d.urllib, d.download_image_with_retry) == before

    def download_image(row, timeout, user_agent_token, disallowed_header_directives):  # opens URLs some other way
        return row[0], None, "no"

    monkeypatch.setattr(d, "download_image", download_image)
    with pytest.raises(RuntimeError, match="cannot apply the address policy"):
        with fetching(FetchPolicy()):
            pass
    assert (d.urllib, d.download_image_with_retry) == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_per_host": 0}, "max_per_host must be at least 1"),
        ({"user_agent_token": "my bot"}, "user agent token must be one word"),
        ({"user_agent_token": "bot/1.0"}, "user agent token must be one word"),
        ({"disallowed_header_directives": "noai"}, "must be a list of directives"),
        ({"backoff": -1}, "must be >= 0"),
    ],
)
def test_bad_fetch_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FetchPolicy(**kwargs)


# ------------------------------------------------------- end to end, through Ray and the CLI (loopback only)


def _url_list(path, urls):
    path.write_text("".join(json.dumps({"url": u, "caption": f"picture {i}"}) + "\n" for i, u in enumerate(urls)))
    return path


def test_curate_download_refuses_loopback_spellings_without_the_flag(tmp_path, fault, capsys, local_ray, assert_known_reasons):
    port = fault.port
    urls = [
        "file:///etc/passwd",
        "data:image/png;base64,iVBORw0KGgo=",
        f"http://localhost:{port}/img/1.jpg",
        f"http://127.0.0.1:{port}/img/2.jpg",
        f"http://2130706433:{port}/img/3.jpg",
        f"http://0x7f000001:{port}/img/4.jpg",
        f"http://[::1]:{port}/img/5.jpg",
        f"http://[::ffff:127.0.0.1]:{port}/img/6.jpg",
        f"http://127.0.0.1:{port}/img/2.jpg",  # a duplicate: rejected as one (found beside the download)
    ]
    out = tmp_path / "out"
    assert main(["download", str(_url_list(tmp_path / "urls.jsonl", urls)), "--out", str(out), "--shard-rows", "4"]) == 0
    assert "9 URLs -> 0 records, 9 rejects" in capsys.readouterr().out
    rejects = assert_known_reasons(out)
    assert sorted(r["reason"] for r in rejects) == ["blocked_address"] * 8 + ["duplicate_url"]
    assert fault.log == []  # the server's own log: not one request
    manifest = Dataset(out).manifest
    assert manifest["stages"]["download"]["dropped"] == {"blocked_address": 8, "duplicate_url": 1}
    # a small list's duplicates are found in the driver before the first shard starts: the copy is not tried
    assert manifest["download"]["requests"] == 0 and sum(manifest["download"]["blocked_by_host"].values()) == 8
    assert manifest["download"]["duplicate_urls_fetched"] == 0
    (dup,) = [r for r in rejects if r["reason"] == "duplicate_url"]
    assert dup["record_id"] == "web:8" and dup["detail"].startswith("same URL as web:3")


def test_curate_download_from_loopback_with_the_flag(tmp_path, fault, capsys, local_ray, assert_known_reasons, monkeypatch):
    """Duplicates across input shards (found by the shuffle on Ray, as for a list too large for the driver),
    opt-outs, the manifest's per-host counts, the CLI's fetch options."""
    import jobs.web_pairs

    monkeypatch.setattr(jobs.web_pairs, "LOCAL_INDEX_ROWS", 0)
    base = fault.base
    urls = [f"{base}/img/a.jpg", f"{base}/noai.jpg", f"{base}/img/b.jpg", f"{base}/404.jpg",
            f"{base}/img/a.jpg#copy", f"{base}/img/b.jpg"]
    out = tmp_path / "out"
    argv = ["download", str(_url_list(tmp_path / "urls.jsonl", urls)), "--out", str(out), "--shard-rows", "2",
            "--allow-private-network", "--retries", "0", "--user-agent-token", "testbot"]
    assert main(argv) == 0
    rejects = {r["record_id"]: r for r in assert_known_reasons(out)}
    records = {r["record_id"]: r for r in Dataset(out).read("records").to_pylist()}
    assert set(records) == {"web:0", "web:2"}
    assert {k: r["reason"] for k, r in rejects.items()} == {
        "web:1": "opted_out", "web:3": "http_error", "web:4": "duplicate_url", "web:5": "duplicate_url"}
    assert rejects["web:4"]["detail"].startswith("same URL as web:0")  # across input shards (shard 2 vs 0)
    assert rejects["web:5"]["detail"].startswith("same URL as web:2")
    # the duplicate index runs beside the downloads: a copy in a shard that started before it was complete
    # is fetched, then dropped all the same, and the manifest counts those fetches
    manifest = Dataset(out).manifest
    late = manifest["download"]["duplicate_urls_fetched"]
    assert 0 <= late <= 2
    assert fault.hits["/noai.jpg"] == 1 and fault.hits["/404.jpg"] == 1
    assert fault.hits["/img/a.jpg"] + fault.hits["/img/b.jpg"] == 2 + late
    assert {h["User-Agent"] for _, h in fault.log} == {FetchPolicy(user_agent_token="testbot").user_agent}
    assert manifest["download"]["requests_by_host"] == {"127.0.0.1": 4 + late}
    assert manifest["download"]["requests"] == 4 + late
    config = manifest["config"]
    assert config["allow_private_network"] is True and config["user_agent_token"] == "testbot"
    assert config["disallowed_header_directives"] == ["noai", "noimageai", "noindex", "noimageindex"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--user-agent-token", "my bot"], "user agent token must be one word"),
        (["--max-per-host", "0"], "--max-per-host must be positive"),
    ],
)
def test_bad_fetch_options_are_one_line(tmp_path, capsys, argv, message):
    urls = _url_list(tmp_path / "urls.jsonl", ["http://127.0.0.1:1/a.jpg"])
    assert main(["download", str(urls), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()
