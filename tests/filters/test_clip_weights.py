"""A pretrained tag's weights: found on disk without network access, loaded with the hub offline."""

import importlib
import ipaddress
import os
import socket
import time

import pytest

from curation.cli import main
from curation.storage.dataset import DatasetWriter
from curation.errors import InputError
from curation.schema import records_from_pylist
from filters.clip_score import ClipModelSpec, load_clip, pretrained_weights

MODEL, TAG = "ViT-B-32", "laion2b_s34b_b79k"  # a real open_clip tag
REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.fixture
def no_network(monkeypatch):
    """Any connection (or name lookup) beyond loopback fails the test."""

    def loopback(host) -> bool:
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not loopback(host if isinstance(host, str) else host.decode()):
            raise AssertionError(f"name lookup attempted: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own; returns its hub folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hf" / "hub"


def _cache_file(hub, filename: str, data: bytes = b"not really weights") -> str:
    """A file of REPO in the hub cache layout huggingface_hub writes (refs/main -> snapshots/COMMIT/)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    path = repo / "snapshots" / commit / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_missing_tag_weights_are_one_line_fast_and_offline(tmp_path, hf_cache, no_network, capsys):
    importlib.import_module("open_clip")  # before the clock starts: the check is timed, not the import

    w = DatasetWriter(tmp_path / "ds")
    w.write("records", records_from_pylist([{"record_id": "t:0", "source": "t", "width": 64, "height": 64, "captions": ["a cat"]}]))
    w.close()
    t0 = time.time()
    rc = main(["filter", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--clip-model", MODEL, "--clip-pretrained", TAG])
    elapsed = time.time() - t0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"curate filter: error: {MODEL}/{TAG}: pretrained weights not on this machine")
    assert REPO in lines[0] and str(hf_cache) in lines[0] and "--clip-checkpoint PATH" in lines[0]
    assert elapsed < 5, elapsed
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("filename", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_cached_tag_weights_are_found(hf_cache, no_network, filename):
    path = _cache_file(hf_cache, filename)
    ClipModelSpec(MODEL, pretrained=TAG).check()
    assert pretrained_weights(MODEL, TAG) == (hf_cache, type(hf_cache)(path))


def test_load_finds_the_cached_file_with_the_hub_offline_and_restores_it(hf_cache, no_network, monkeypatch):
    import huggingface_hub.constants
    import open_clip

    path = _cache_file(hf_cache, "open_clip_pytorch_model.bin")
    seen = {}

    def create(name, pretrained=None, device="cpu", cache_dir=None, **kw):
        seen["offline"] = (os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE)
        # open_clip's own resolution of the tag, as in create_model: the cached file, no download
        seen["file"] = open_clip.pretrained.download_pretrained(open_clip.get_pretrained_cfg(name, pretrained), cache_dir=cache_dir)
        raise RuntimeError("stop here: the weights are not real")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", create)
    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE
    with pytest.raises(InputError, match="cannot load CLIP weights: stop here"):
        load_clip(ClipModelSpec(MODEL, pretrained=TAG))
    assert seen == {"offline": ("1", True), "file": path}
    assert "HF_HUB_OFFLINE" not in os.environ and huggingface_hub.constants.HF_HUB_OFFLINE == offline_before


def test_load_without_cached_weights_never_downloads(hf_cache, no_network):
    with pytest.raises(InputError, match="pretrained weights not on this machine"):
        load_clip(ClipModelSpec(MODEL, pretrained=TAG))


def test_malformed_model_config_is_an_input_error(tmp_path):
    bad = tmp_path / "Mine.json"
    bad.write_text('{"embed_dim": 4,')
    with pytest.raises(InputError, match="not a JSON open_clip model config"):
        ClipModelSpec(str(bad)).check()
    bad.write_text('{"embed_dim": 4}')
    with pytest.raises(InputError, match="needs embed_dim, vision_cfg and text_cfg"):
        ClipModelSpec(str(bad)).check()
