"""The crawler's rules as pure functions: address policy, URL checks, duplicates, retry timing."""

import ipaddress

import pytest

from curation.crawl.netpolicy import (
    address_allowed,
    duplicate_of,
    interleave_by_host,
    is_retryable_status,
    legacy_ipv4,
    literal_address,
    normalize_url,
    parse_host,
    parse_retry_after,
    retry_delay,
    unsafe_file_name,
    url_refusal,
)


@pytest.mark.parametrize(
    "address, kind",
    [
        # IPv4
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata address
        ("169.254.0.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "private"),  # reserved 240/4 (Python files it under private too)
        ("255.255.255.255", "private"),
        ("100.64.0.1", "not globally routable"),  # shared address space (carrier NAT)
        ("192.0.2.1", "private"),  # documentation
        ("198.18.0.1", "private"),  # benchmarking
        # IPv6
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::7f00:1", "reserved"),  # IPv4-compatible ::127.0.0.1
        ("2001:db8::1", "private"),  # documentation
        # IPv6 that embeds an IPv4 address
        ("::ffff:127.0.0.1", "127.0.0.1, which is loopback"),
        ("::ffff:10.0.0.1", "10.0.0.1, which is private"),
        ("::ffff:169.254.169.254", "169.254.169.254, which is link-local"),
        ("2002:7f00:1::", "127.0.0.1, which is loopback"),  # 6to4
        ("2002:a9fe:a9fe::1", "169.254.169.254, which is link-local"),
        ("64:ff9b::a9fe:a9fe", "reserved"),  # NAT64 of the metadata address
    ],
)
def test_refused_addresses(address, kind):
    why = address_allowed(address)
    assert why is not None and why.endswith(kind), why
    assert address_allowed(ipaddress.ip_address(address)) == why
    assert address_allowed(address, allow_private=True) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "172.32.0.1", "172.15.255.255",
                                     "2606:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_allowed(address) is None


def test_a_string_that_is_no_address_is_refused():
    assert address_allowed("example.com") == "'example.com' is not an IP address"


@pytest.mark.parametrize(
    "host, address",
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hex
        ("0X7F000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),  # octal
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("1.2.3.4.5", None),
        ("256.1.1.1", None),
        ("1.2.3.256", None),
        ("4294967296", None),
        ("08.0.0.1", None),  # not octal
        ("example.com", None),
        ("0x", "0.0.0.0"),
        ("", None),
    ],
)
def test_ipv4_in_every_spelling_inet_aton_accepts(host, address):
    got = legacy_ipv4(host)
    assert (str(got) if got else None) == address


@pytest.mark.parametrize(
    "host, address",
    [("[::1]", "::1"), ("::ffff:127.0.0.1", "::ffff:7f00:1"), ("fe80::1%eth0", "fe80::1"), ("2130706433", "127.0.0.1"),
     ("localhost", None), ("images.example.com", None)],
)
def test_literal_address(host, address):
    got = literal_address(host)
    assert (str(got) if got else None) == address


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://Example.COM/a.jpg", ("http", "example.com", 80)),
        ("https://example.com:8443/a.jpg", ("https", "example.com", 8443)),
        ("HTTPS://[::1]/x", ("https", "::1", 443)),
        ("http://user:pw@10.0.0.1:81/", ("http", "10.0.0.1", 81)),
    ],
)
def test_parse_host(url, expected):
    assert parse_host(url) == expected


@pytest.mark.parametrize(
    "url, message",
    [
        ("file:///etc/passwd", "scheme file: is not http or https"),
        ("data:image/png;base64,iVBORw0KGgo=", "scheme data: is not http or https"),
        ("ftp://example.com/a.jpg", "scheme ftp: is not http or https"),
        ("gopher://example.com/", "scheme gopher: is not http or https"),
        ("//example.com/a.jpg", "scheme (none) is not http or https"),
        ("http:///a.jpg", "has no host"),
        ("http://example.com:99999/", "Port out of range"),
        ("http://example.com:0/", "port 0"),
    ],
)
def test_parse_host_refuses(url, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_host(url)


# The SSRF list of issue 9, judged without DNS (names are resolved and checked at connection time).
@pytest.mark.parametrize(
    "url, why",
    [
        ("file:///etc/passwd", "scheme file: is not http or https"),
        ("data:image/png;base64,iVBORw0KGgo=", "scheme data: is not http or https"),
        ("http://localhost/a.jpg", "localhost is loopback"),
        ("http://LocalHost.:8080/a.jpg", "localhost is loopback"),
        ("http://img.localhost/a.jpg", "img.localhost is loopback"),
        ("http://127.0.0.1/a.jpg", "127.0.0.1 is loopback"),
        ("http://2130706433/a.jpg", "127.0.0.1 is loopback"),
        ("http://0x7f000001/a.jpg", "127.0.0.1 is loopback"),
        ("http://0177.0.0.1/a.jpg", "127.0.0.1 is loopback"),
        ("http://[::1]/a.jpg", "::1 is loopback"),
        ("http://[::ffff:127.0.0.1]/a.jpg", "127.0.0.1, which is loopback"),
        ("http://10.0.0.1/a.jpg", "10.0.0.1 is private"),
        ("http://172.16.0.1/a.jpg", "172.16.0.1 is private"),
        ("http://192.168.1.1/a.jpg", "192.168.1.1 is private"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("http://0/a.jpg", "0.0.0.0 is unspecified"),
        ("http://user@127.0.0.1:80@evil.example/a.jpg", None),  # the host is evil.example: judged when resolved
        ("http://images.example.com/a.jpg", None),
        ("https://8.8.8.8/a.jpg", None),
    ],
)
def test_url_refusal(url, why):
    got = url_refusal(url)
    assert (got is None) == (why is None), got
    if why:
        assert got.endswith(why), got


def test_allow_private_still_refuses_other_schemes():
    assert url_refusal("http://127.0.0.1/a.jpg", allow_private=True) is None
    assert url_refusal("http://localhost/a.jpg", allow_private=True) is None
    assert url_refusal("file:///etc/passwd", allow_private=True) == "scheme file: is not http or https"


@pytest.mark.parametrize(
    "a, b",
    [
        ("HTTP://Example.COM:80/a.jpg#top", "http://example.com/a.jpg"),
        ("https://example.com:443", "https://example.com/"),
        ("http://example.com:8080/A.jpg?x=1#f", "http://example.com:8080/A.jpg?x=1"),
        ("http://[::1]:80/a", "http://[::1]/a"),
        ("  http://example.com/a.jpg  ", "http://example.com/a.jpg"),
    ],
)
def test_normalize_url(a, b):
    assert normalize_url(a) == b


@pytest.mark.parametrize(
    "a, b",
    [
        ("http://example.com/a.jpg", "https://example.com/a.jpg"),  # scheme matters
        ("http://example.com/a.jpg", "http://example.com/A.jpg"),  # path case matters
        ("http://example.com/a.jpg?x=1", "http://example.com/a.jpg?x=2"),
        ("http://example.com:8080/a.jpg", "http://example.com/a.jpg"),
    ],
)
def test_different_urls_stay_different(a, b):
    assert normalize_url(a) != normalize_url(b)


def test_duplicate_of_names_the_earliest_row():
    ids = ["w:0", "w:1", "w:2", "w:3", "w:4", "w:5"]
    urls = ["http://a.example/x.jpg", "HTTP://A.example:80/x.jpg#1", "http://b.example/x.jpg", None, "http://a.example/x.jpg", ""]
    assert duplicate_of(ids, urls) == [None, "w:0", None, None, "w:0", None]


def test_interleave_by_host_takes_turns():
    urls = ["http://a/1", "http://a/2", "http://a/3", "http://b/1", "http://c/1", "http://b/2", "not a url"]
    order = interleave_by_host(urls)
    assert sorted(order) == list(range(len(urls)))
    assert [urls[i] for i in order] == ["http://a/1", "http://b/1", "http://c/1", "not a url", "http://a/2", "http://b/2", "http://a/3"]


@pytest.mark.parametrize("status, retry", [(429, True), (500, True), (502, True), (503, True), (504, True),
                                           (501, False), (505, False), (404, False), (403, False), (200, False)])
def test_retryable_status(status, retry):
    assert is_retryable_status(status) is retry


@pytest.mark.parametrize(
    "value, seconds",
    [("5", 5.0), (" 0 ", 0.0), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
     ("soon", None), ("-1", None), ("1.5", None), (None, None)],
)
def test_parse_retry_after(value, seconds):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(value, now=now) == seconds


@pytest.mark.parametrize(
    "attempt, retry_after, delay",
    [
        (0, None, 1.0), (1, None, 2.0), (2, None, 4.0), (5, None, 30.0),  # exponential, capped at max_wait
        (0, 5.0, 5.0),  # never sooner than Retry-After asks
        (3, 5.0, 8.0),  # nor sooner than the backoff
        (0, 30.0, 30.0),
        (0, 31.0, None),  # asks for more than max_wait: no retry at all
        (0, float("inf"), None),
    ],
)
def test_retry_delay(attempt, retry_after, delay):
    assert retry_delay(attempt, retry_after, base=1.0, max_wait=30.0) == delay


def test_retry_delay_rejects_negative_settings():
    with pytest.raises(ValueError, match="must be >= 0"):
        retry_delay(0, None, base=-1.0, max_wait=1.0)


@pytest.mark.parametrize(
    "name, why",
    [
        ("000000139.jpg", None),
        ("train/a b.jpg", None),
        ("a..b.jpg", None),
        ("../secret.jpg", "climbs out"),
        ("a/../../b.jpg", "climbs out"),
        ("a\\..\\b.jpg", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("\\\\server\\share\\x.jpg", "absolute"),
        ("C:\\x.jpg", "absolute"),
        ("", "empty"),
        (None, "empty"),
    ],
)
def test_unsafe_file_name(name, why):
    got = unsafe_file_name(name)
    assert (got is None) == (why is None), got
    if why:
        assert why in got
