"""The committed demo CLIP checkpoint: loads the normal open_clip way, is small, and works as a filter."""

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from curation.democorpus import generate_corpus

ASSETS = Path(__file__).resolve().parents[2] / "jobs" / "assets" / "demo-clip"
CONFIG = ASSETS / "DemoCLIP-Tiny.json"
CHECKPOINT = ASSETS / "demo_clip.pt"
EVAL = ASSETS / "demo_clip.eval.json"


@pytest.fixture(scope="module")
def demo_clip():
    open_clip.add_model_config(CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms("DemoCLIP-Tiny", pretrained=str(CHECKPOINT))
    tokenizer = open_clip.get_tokenizer("DemoCLIP-Tiny")
    model.eval()
    return model, preprocess, tokenizer


def test_assets_are_small_and_in_open_clip_format():
    cfg = json.loads(CONFIG.read_text())
    assert {"embed_dim", "vision_cfg", "text_cfg"} <= cfg.keys()
    assert cfg["text_cfg"]["vocab_size"] == 49408  # open_clip's default tokenizer
    assert CHECKPOINT.stat().st_size <= 10 * 1024 * 1024


def test_checkpoint_loads_through_open_clip(demo_clip):
    model, preprocess, tokenizer = demo_clip
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    assert state.keys() == loaded.keys()
    name = "visual.conv1.weight"
    assert torch.equal(loaded[name].half(), state[name].half())  # weights came from the file, not an init
    tokens = tokenizer(["a red circle on a striped background"])
    assert tokens.shape == (1, cfg_context_length())
    x = preprocess(Image.new("RGB", (300, 200), (128, 128, 128))).unsqueeze(0)
    assert x.shape == (1, 3, 64, 64)
    with torch.no_grad():
        assert model.encode_image(x).shape == model.encode_text(tokens).shape


def cfg_context_length() -> int:
    return json.loads(CONFIG.read_text())["text_cfg"]["context_length"]


def test_recorded_threshold_separates_swapped_captions_on_a_fresh_corpus(demo_clip, tmp_path):
    model, preprocess, tokenizer = demo_clip
    threshold = json.loads(EVAL.read_text())["threshold"]
    items = generate_corpus(tmp_path, n=120, seed=2)  # training and the recorded threshold used other seeds
    items = [it for it in items if it.planted not in ("corrupt", "tiny")]
    images = []
    for it in items:
        with Image.open(tmp_path / it.filename) as im:
            images.append(preprocess(im.convert("RGB")))
    with torch.no_grad():
        f = F.normalize(model.encode_image(torch.stack(images)).float(), dim=-1)
        g = F.normalize(model.encode_text(tokenizer([it.caption for it in items])).float(), dim=-1)
    clip_score = (f * g).sum(-1).numpy()
    swapped = np.array([it.planted == "swapped_caption" for it in items])
    assert swapped.sum() >= 15
    dropped = clip_score < threshold
    assert dropped[swapped].mean() >= 0.9, sorted(clip_score[swapped])
    assert dropped[~swapped].mean() <= 0.1, sorted(clip_score[~swapped])
    # and on its own scores, every swapped caption ranks below its image's true caption
    g_true = F.normalize(model.encode_text(tokenizer([it.true_caption for it in items])).float(), dim=-1)
    true_score = (f * g_true).sum(-1).detach().numpy()
    assert (clip_score[swapped] < true_score[swapped]).mean() >= 0.95
