import io

import numpy as np
import pytest
from PIL import Image

from curation.errors import InputError
from curation.runtime import run_local, split_rejects
from curation.schema import records_from_pylist
from filters.clip_score import ClipModelSpec, ClipPreprocess, ClipScore, load_clip, resolve_preprocess_cfg
from jobs.demo import DEMO_CLIP_DIR

CONFIG = str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A randomly initialised DemoCLIP-Tiny, saved as an ordinary open_clip checkpoint."""
    import open_clip
    import torch

    from filters.clip_score import resolve_model_name

    torch.manual_seed(0)
    model = open_clip.create_model(resolve_model_name(CONFIG))
    path = tmp_path_factory.mktemp("clip") / "random.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def jpeg(w, h, seed):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def batch():
    return records_from_pylist(
        [
            {"record_id": "t:0", "source": "t", "image": jpeg(96, 64, 0), "width": 96, "height": 64, "captions": ["a red circle"]},
            {"record_id": "t:1", "source": "t", "image": jpeg(50, 120, 1), "width": 50, "height": 120, "captions": ["two blue squares on stripes", "x"]},
            {"record_id": "t:2", "source": "t", "image": jpeg(64, 64, 2), "width": 64, "height": 64, "captions": []},
            {"record_id": "t:3", "source": "t", "image": b"<html>not an image</html>", "width": 64, "height": 64, "captions": ["a star"]},
        ]
    )


def direct_scores(spec, table):
    """What a user computes with open_clip by hand."""
    import torch

    model, preprocess, tokenizer = load_clip(spec)
    out = {}
    for row in table.to_pylist():
        if not row["captions"]:
            continue
        try:
            img = Image.open(io.BytesIO(row["image"]))
            img.load()
        except OSError:
            continue
        with torch.no_grad():
            i = model.encode_image(preprocess(img).unsqueeze(0))
            t = model.encode_text(tokenizer([row["captions"][0]]))
            i = i / i.norm(dim=-1, keepdim=True)
            t = t / t.norm(dim=-1, keepdim=True)
        out[row["record_id"]] = float((i * t).sum())
    return out


def test_clip_score_equals_a_direct_open_clip_computation(random_checkpoint):
    spec = ClipModelSpec(CONFIG, checkpoint=random_checkpoint)
    out = run_local(batch(), [ClipPreprocess(spec), ClipScore(spec, min_score=None)])
    kept, rejects = split_rejects(out)
    got = dict(zip(kept.column("record_id").to_pylist(), kept.column("clip_score").to_pylist()))
    expected = direct_scores(spec, batch())
    assert set(expected) == {"t:0", "t:1"}
    for rid, score in expected.items():
        assert got[rid] == pytest.approx(score, abs=1e-4)
    # no caption: null score, kept
    assert got["t:2"] is None
    # undecodable bytes: a reject with a reason, never a silent drop
    assert rejects.to_pylist()[0]["record_id"] == "t:3"
    assert rejects.to_pylist()[0]["reason"] == "image_decode_error"
    # working columns are gone
    assert not {"clip_pixels", "clip_tokens", "clip_shape"} & set(kept.column_names)


def _kept_and_dropped(spec, min_score):
    out = run_local(batch(), [ClipPreprocess(spec), ClipScore(spec, min_score=min_score)])
    kept, rejects = split_rejects(out)
    return dict(zip(kept.column("record_id").to_pylist(), kept.column("clip_score").to_pylist())), {
        r["record_id"]: r for r in rejects.to_pylist()
    }


def test_threshold_drops_below_and_keeps_at_or_above(random_checkpoint):
    spec = ClipModelSpec(CONFIG, checkpoint=random_checkpoint)
    scores = direct_scores(spec, batch())
    low, high = sorted(scores, key=scores.get)
    assert scores[high] - scores[low] > 1e-3  # the midpoint separates them beyond float noise
    thr = (scores[low] + scores[high]) / 2
    kept, dropped = _kept_and_dropped(spec, thr)
    # below: dropped by the clip stage with the reason; undecodable bytes dropped earlier, as without a threshold
    assert set(dropped) == {low, "t:3"}
    assert dropped[low]["reason"] == "clip_score_below_threshold"
    assert dropped[low]["stage"] == "clip"
    # above: kept, with its score
    assert set(kept) == {high, "t:2"}
    assert kept[high] >= thr and kept[high] == pytest.approx(scores[high], abs=1e-4)
    assert kept["t:2"] is None  # no caption is never dropped by CLIP

    # at: a threshold equal to the stage's own score of `high` keeps it, one step above drops it
    at = float(kept[high])
    kept, dropped = _kept_and_dropped(spec, at)
    assert set(kept) == {high, "t:2"} and kept[high] == at
    kept, dropped = _kept_and_dropped(spec, float(np.nextafter(np.float32(at), np.float32(np.inf))))
    assert set(kept) == {"t:2"} and set(dropped) == {low, high, "t:3"}
    assert dropped[high]["reason"] == "clip_score_below_threshold"


def test_preprocess_resolved_without_weights_matches_the_model(random_checkpoint):
    spec = ClipModelSpec(CONFIG, checkpoint=random_checkpoint)
    model, _, _ = load_clip(spec)
    cfg = resolve_preprocess_cfg(spec)
    for key in ("size", "mean", "std", "interpolation", "resize_mode"):
        assert tuple(np.atleast_1d(cfg[key])) == tuple(np.atleast_1d(model.visual.preprocess_cfg[key]))


def test_pretrained_tag_preprocess_comes_from_the_tag():
    cfg = resolve_preprocess_cfg(ClipModelSpec("ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert cfg["size"] == (224, 224) and cfg["interpolation"] == "bicubic"


@pytest.mark.parametrize(
    "spec,message",
    [
        (ClipModelSpec("No-Such-Model"), "unknown open_clip model"),
        (ClipModelSpec("ViT-B-32", pretrained="no_such_tag"), "no pretrained tag"),
        (ClipModelSpec(CONFIG, checkpoint="/nonexistent/ckpt.pt"), "checkpoint not found"),
        (ClipModelSpec("/nonexistent/model.json"), "model config not found"),
        (ClipModelSpec("ViT-B-32", pretrained="openai", checkpoint="x.pt"), "not both"),
    ],
)
def test_bad_model_specs_fail_early_with_one_line(spec, message):
    with pytest.raises(InputError, match=message):
        spec.check()


def test_unreadable_checkpoint_is_an_input_error(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(InputError, match="cannot load CLIP weights"):
        load_clip(ClipModelSpec(CONFIG, checkpoint=str(bad)))
