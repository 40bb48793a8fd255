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


# --- a CLIP stage that can feed a GPU (issue 8, item 7) ---


def test_batch_size_defaults_to_hundreds_on_a_gpu_and_64_on_cpus():
    from filters.clip_score import default_batch_size

    assert default_batch_size(1.0) == 256
    assert default_batch_size(0.5) == 256
    assert default_batch_size(0.0) == 64
    assert ClipScore(ClipModelSpec(CONFIG), None, gpus=1.0).batch_size == 256
    assert ClipScore(ClipModelSpec(CONFIG), None).batch_size == 64
    assert ClipScore(ClipModelSpec(CONFIG), None, gpus=1.0, batch_size=32).batch_size == 32


def test_autocast_is_bf16_on_gpus_that_have_it_fp16_otherwise_fp32_on_cpus():
    from filters.clip_score import autocast_dtype

    assert autocast_dtype("cuda", bf16_supported=True) == "bfloat16"
    assert autocast_dtype("cuda", bf16_supported=False) == "float16"
    assert autocast_dtype("cpu", bf16_supported=True) is None


@pytest.mark.parametrize("w,h", [(1024, 768), (768, 1024), (4000, 300), (300, 300), (225, 2000), (100, 80)])
def test_draft_request_keeps_the_decoded_image_at_least_the_model_input(w, h):
    """PIL's draft picks the largest 1/2, 1/4, 1/8 scale whose result is >= the request on both sides."""
    from filters.clip_score import draft_request

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 30, 200)).save(buf, format="JPEG")
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.draft("RGB", draft_request(w, h, (224, 224)))
        im.load()
        dw, dh = im.size
    assert min(dw, dh) >= min(224, w, h)
    if min(w, h) >= 2 * 224 * 2:  # room for at least a 1/2 scale: it is taken
        assert dw < w and dh < h


def _photo_jpegs(n=6):
    """Smooth photo-like JPEGs (gradients + shapes), larger than the model input, as real photos are."""
    from PIL import ImageDraw

    rows = []
    rng = np.random.default_rng(5)
    for i in range(n):
        w, h = int(rng.integers(500, 1100)), int(rng.integers(400, 900))
        x = np.linspace(0, 1, w)[None, :, None]
        y = np.linspace(0, 1, h)[:, None, None]
        base = (255 * (0.5 * x + 0.5 * y * rng.random((1, 1, 3)))).astype(np.uint8)
        im = Image.fromarray(np.broadcast_to(base, (h, w, 3)).copy())
        d = ImageDraw.Draw(im)
        for _ in range(5):
            x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50))
            d.ellipse([x0, y0, x0 + int(rng.integers(30, 300)), y0 + int(rng.integers(30, 300))], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        rows.append({"record_id": f"p:{i}", "source": "t", "image": buf.getvalue(), "width": w, "height": h,
                     "captions": [f"a picture number {i} with shapes"]})
    return records_from_pylist(rows)


def test_fast_decode_is_off_by_default_and_moves_scores_only_a_little(random_checkpoint):
    spec = ClipModelSpec(CONFIG, checkpoint=random_checkpoint)
    table = _photo_jpegs()
    assert ClipPreprocess(spec).fast_decode is False
    exact = run_local(table, [ClipPreprocess(spec), ClipScore(spec, None)]).column("clip_score").to_numpy()
    fast = run_local(table, [ClipPreprocess(spec, fast_decode=True), ClipScore(spec, None)]).column("clip_score").to_numpy()
    # draft decoding really changed the pixels the model saw ...
    pre_exact = ClipPreprocess(spec).measure(table)["clip_pixels"].to_pylist()
    pre_fast = ClipPreprocess(spec, fast_decode=True).measure(table)["clip_pixels"].to_pylist()
    assert sum(a != b for a, b in zip(pre_exact, pre_fast)) >= len(pre_exact) // 2
    # ... at the model's input size, and the scores stay close to exact preprocessing
    assert np.abs(exact - fast).max() < 0.05


def test_fast_decode_is_a_config_key_and_an_option(tmp_path):
    from curation.cli import build_parser
    from jobs.web_pairs import WebPairsConfig
    from filters.clip_score import from_config

    cfg = WebPairsConfig(urls="", out=str(tmp_path / "o"), clip_model=CONFIG, clip_checkpoint=str(DEMO_CLIP_DIR / "demo_clip.pt"),
                         clip_fast_decode=True)
    pre, score = from_config(cfg)
    assert pre.fast_decode is True and pre.batch_size == score.batch_size == 64
    argv = ["filter", "IN", "--out", "O", "--clip-fast-decode"]
    args = build_parser(argv).parse_args(argv)
    assert args.clip_fast_decode is True and args.clip_batch_size is None


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (run on a lent GPU machine)")
def test_gpu_scores_match_cpu_scores_under_autocast(random_checkpoint):  # pragma: no cover - GPU only
    spec = ClipModelSpec(CONFIG, checkpoint=random_checkpoint)
    table = _photo_jpegs(8)
    cpu = run_local(table, [ClipPreprocess(spec), ClipScore(spec, None)]).column("clip_score").to_numpy()
    gpu = run_local(table, [ClipPreprocess(spec), ClipScore(spec, None, gpus=1.0)]).column("clip_score").to_numpy()
    assert np.abs(cpu - gpu).max() < 0.02


def test_the_reused_pixel_buffer_never_leaks_rows_between_batches(random_checkpoint):
    """One host buffer is refilled batch after batch (pinned on CUDA): scores of a batch do not depend on
    the batches before it."""
    spec = ClipModelSpec(CONFIG, checkpoint=random_checkpoint)
    table = _photo_jpegs(6)
    pre = ClipPreprocess(spec)
    big, small = pre.measure(table), pre.measure(table.slice(3, 2))
    from filters.clip_score import ClipScore as CS

    def scored(stage, measured, rows):
        import pyarrow as pa

        t = pa.table({"clip_pixels": measured["clip_pixels"], "clip_shape": measured["clip_shape"],
                      "clip_tokens": measured["clip_tokens"]}).slice(0, rows)
        return stage.measure(t)["clip_score"].to_pylist()

    reused = CS(spec, None, batch_size=8)
    first = scored(reused, big, 6)
    buffer = reused._host
    second = scored(reused, small, 2)
    assert reused._host is buffer and buffer.shape[0] == 8  # the same buffer, refilled
    assert second == pytest.approx(scored(CS(spec, None), small, 2), abs=1e-6)
    assert second == pytest.approx(first[3:5], abs=1e-5)
