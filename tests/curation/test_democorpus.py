import hashlib
import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.democorpus import BACKGROUNDS, COLORS, SHAPES, DemoItem, generate_corpus, sample_pair

_PAIR_RE = re.compile(rf"an? ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})")


def _pairs(caption: str) -> set[tuple[str, str]]:
    return set(_PAIR_RE.findall(caption))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, generate_corpus(out, n=240, seed=0)


def _digests(out: Path, items: list[DemoItem]) -> list[str]:
    return [hashlib.sha256((out / it.filename).read_bytes()).hexdigest() for it in items]


def test_same_seed_same_bytes_and_items(tmp_path):
    a = generate_corpus(tmp_path / "a", n=32, seed=3)
    b = generate_corpus(tmp_path / "b", n=32, seed=3)
    c = generate_corpus(tmp_path / "c", n=32, seed=4)
    assert [asdict(x) for x in a] == [asdict(x) for x in b]
    assert _digests(tmp_path / "a", a) == _digests(tmp_path / "b", b)
    assert _digests(tmp_path / "a", a) != _digests(tmp_path / "c", c)


def test_planted_counts(corpus):
    _, items = corpus
    assert len(items) == 240
    counts = Counter(it.planted for it in items)
    assert counts == {None: 195, "swapped_caption": 36, "corrupt": 3, "tiny": 3, "duplicate": 3}
    assert len({it.item_id for it in items}) == len({it.filename for it in items}) == 240


def test_swapped_captions_do_not_describe_the_image(corpus):
    _, items = corpus
    true_captions = {it.true_caption for it in items}
    for it in items:
        if it.planted == "swapped_caption":
            assert it.caption != it.true_caption
            assert it.caption in true_captions  # another image's caption
            assert _pairs(it.caption) != _pairs(it.true_caption)
        else:
            assert it.caption == it.true_caption


def _near(arr: np.ndarray, rgb, tol: float) -> np.ndarray:
    return np.linalg.norm(arr.astype(np.float32) - np.array(rgb, np.float32), axis=-1) < tol


def test_clean_images_decode_and_boxes_are_tight(corpus):
    out, items = corpus
    checked = 0
    for it in items:
        if it.planted in ("corrupt", "tiny"):
            continue
        with Image.open(out / it.filename) as im:
            assert im.format == "JPEG"
            assert im.size == (it.width, it.height)
            arr = np.asarray(im.convert("RGB"))
        h, w = arr.shape[:2]
        assert 192 <= w <= 384 and 192 <= h <= 384
        count = {q["question"]: q["answer"] for q in it.qa}["How many shapes are there?"]
        assert int(count) == len(it.regions)
        for reg in it.regions:
            color = COLORS[reg["phrase"].split()[1]]
            (x1, y1, x2, y2), = (map(int, b) for b in reg["boxes"])
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            inside = _near(arr[y1:y2, x1:x2], color, 60)
            assert inside.mean() > 0.3, (it.item_id, reg)
            # each side of the box touches the shape (within 4 px; JPEG blurs the colour of thin star tips)
            edge = _near(arr[y1:y2, x1:x2], color, 90)
            assert edge[:4].any() and edge[-4:].any() and edge[:, :4].any() and edge[:, -4:].any(), (it.item_id, reg)
            # nothing of the shape's colour in a ring 2-4 px outside the box
            ring = np.zeros((h, w), bool)
            ring[max(0, y1 - 4) : y2 + 4, max(0, x1 - 4) : x2 + 4] = True
            ring[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = False
            assert not _near(arr[ring], color, 40).any(), (it.item_id, reg)
            checked += 1
        for o in it.ocr:
            qx1, qy1, qx2, qy2, qx3, qy3, qx4, qy4 = o["quad"]  # clockwise from top-left
            assert (qy1, qx2, qy3, qx4) == (qy2, qx3, qy4, qx1)
            assert 0 <= qx1 < qx2 <= w and 0 <= qy1 < qy3 <= h
    assert checked > 300


def test_corrupt_files_fail_to_decode(corpus):
    out, items = corpus
    corrupt = [it for it in items if it.planted == "corrupt"]
    heads = set()
    for it in corrupt:
        data = (out / it.filename).read_bytes()
        heads.add(data[:2] == b"\xff\xd8")
        with pytest.raises(OSError):
            with Image.open(out / it.filename) as im:
                im.load()
    assert heads == {True, False}  # a truncated JPEG and a non-image (HTML) file


def test_tiny_images(corpus):
    out, items = corpus
    for it in (it for it in items if it.planted == "tiny"):
        with Image.open(out / it.filename) as im:
            im.load()
            assert im.format == "JPEG"
            assert im.size == (it.width, it.height)
        assert 16 <= it.width <= 24 and 16 <= it.height <= 24
        for reg in it.regions:
            x1, y1, x2, y2 = reg["boxes"][0]
            assert 0 <= x1 < x2 <= it.width and 0 <= y1 < y2 <= it.height


def test_duplicates_are_byte_copies_with_the_source_caption(corpus):
    out, items = corpus
    by_digest: dict[str, list[DemoItem]] = {}
    for it, d in zip(items, _digests(out, items)):
        by_digest.setdefault(d, []).append(it)
    for it in (it for it in items if it.planted == "duplicate"):
        group = by_digest[hashlib.sha256((out / it.filename).read_bytes()).hexdigest()]
        sources = [x for x in group if x.planted is None]
        assert sources, it.item_id
        assert it.caption == sources[0].caption and it.regions == sources[0].regions


def test_sample_pair_is_seeded():
    im1, cap1 = sample_pair(np.random.default_rng(11))
    im2, cap2 = sample_pair(np.random.default_rng(11))
    assert cap1 == cap2 and im1.tobytes() == im2.tobytes()
    assert im1.mode == "RGB" and 192 <= min(im1.size) and max(im1.size) <= 384
    assert _pairs(cap1) and any(f"{bg} background" in cap1 for bg in BACKGROUNDS.values())


@pytest.mark.parametrize("bad", [0, 15])
def test_rejects_too_small_corpus(tmp_path, bad):
    with pytest.raises(ValueError):
        generate_corpus(tmp_path, n=bad)


def test_rejects_non_generator():
    with pytest.raises(ValueError):
        sample_pair(42)


def test_near_duplicates_are_close_copies_of_earlier_clean_items(tmp_path):
    from filters.phash import hamming, phash64

    items = generate_corpus(tmp_path, n=240, seed=0, near_duplicates=24)
    by_id = {it.item_id: it for it in items}
    copies = [it for it in items if it.planted == "near_duplicate"]
    assert len(copies) == 24
    assert Counter(it.variant for it in copies) == {"jpeg_quality": 6, "resize": 6, "crop": 6, "caption": 6}
    # the faults planted without near-duplicates are where they were
    plain = generate_corpus(tmp_path / "plain", n=240, seed=0)
    assert [it.planted for it in plain if it.planted] == [it.planted for it in items if it.planted and it.planted != "near_duplicate"]
    for it in copies + [it for it in items if it.planted == "duplicate"]:
        src = by_id[it.duplicate_of]
        assert src.planted is None and src.item_id < it.item_id
        data, src_data = (tmp_path / it.filename).read_bytes(), (tmp_path / src.filename).read_bytes()
        with Image.open(tmp_path / it.filename) as im:
            assert im.size == (it.width, it.height)
        if it.planted == "duplicate":
            assert data == src_data
            continue
        assert data != src_data and hamming(phash64(data), phash64(src_data)) <= 8
        if it.variant == "caption":
            assert it.caption != src.caption and _pairs(it.caption) == _pairs(src.caption)
            with Image.open(tmp_path / it.filename) as a, Image.open(tmp_path / src.filename) as b:
                assert a.tobytes() == b.tobytes()
        else:
            assert it.caption == src.caption
        for reg in it.regions:
            x1, y1, x2, y2 = reg["boxes"][0]
            assert 0 <= x1 < x2 <= it.width and 0 <= y1 < y2 <= it.height
