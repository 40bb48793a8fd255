"""Perceptual hash: the measure, its reference, the band grouping against brute force, eval decontamination."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.democorpus import generate_corpus
from curation.runtime import run_local, split_rejects
from curation.schema import records_from_pylist
from filters.phash import (Decontaminate, PHash, band_keys, band_layout, band_rows, candidate_pairs, eval_hashes, hamming,
                           hamming_array, phash64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, generate_corpus(out, n=200, seed=21)


def _imagehash_value(path) -> int:
    import imagehash

    with Image.open(path) as im:
        value = int(str(imagehash.phash(im)), 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def test_same_image_decoded_twice_has_the_same_hash(corpus):
    out, items = corpus
    for it in items[:20]:
        data = (out / it.filename).read_bytes()
        if it.planted == "corrupt":
            assert phash64(data) is None
            continue
        assert phash64(data) == phash64(bytes(data)) is not None


def test_matches_the_imagehash_reference_on_200_images(corpus):
    """Stated bound: equal, or within Hamming distance 2 (float rounding at the median); measured: all equal."""
    out, items = corpus
    distances = []
    for it in items:
        data = (out / it.filename).read_bytes()
        ours = phash64(data)
        if ours is None:
            assert it.planted == "corrupt"
            continue
        distances.append(hamming(ours, _imagehash_value(out / it.filename)))
    assert len(distances) >= 195
    assert max(distances) <= 2
    assert sum(d == 0 for d in distances) >= 0.95 * len(distances)


@pytest.mark.parametrize("k", [0, 1, 3, 4, 7, 15])
def test_bands_cover_the_64_bits_once(k):
    layout = band_layout(k)
    assert len(layout) == k + 1
    bits = sorted(b for shift, width in layout for b in range(shift, shift + width))
    assert bits == list(range(64))


def test_band_layout_refuses_a_distance_out_of_range():
    with pytest.raises(ValueError, match="32"):
        band_layout(32)


def _planted_hashes(n: int, dups: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    for i in rng.choice(n, size=dups, replace=False):
        j = int(rng.integers(0, n))
        flip = rng.choice(64, size=int(rng.integers(0, k + 2)), replace=False)  # some just beyond k
        mask = 0
        for b in flip:
            mask |= 1 << int(b)
        base[i] = (base[j : j + 1].view(np.uint64) ^ np.uint64(mask)).view(np.int64)[0]
    return base


@pytest.mark.parametrize("k,chunk_rows", [(0, 65_536), (2, 65_536), (4, 65_536), (6, 65_536), (4, 97), (2, 1)])
def test_candidate_pairs_find_exactly_the_brute_force_pairs(k, chunk_rows):
    hashes = _planted_hashes(3000, 300, k, seed=k)
    ids = [f"r{i:05d}" for i in range(len(hashes))]
    batch = pa.table({"record_id": ids, "phash": pa.array(hashes, pa.int64())})
    got = {(r["a"], r["b"], r["distance"]) for r in candidate_pairs(band_rows(batch, k), k, chunk_rows).to_pylist()}
    want = set()
    for i in range(len(hashes)):
        d = hamming_array(hashes[i], hashes[i + 1:])
        for j in np.flatnonzero(d <= k):
            want.add((ids[i], ids[i + 1 + j], int(d[j])))
    assert got == want and len(want) >= 100


def test_a_hot_bucket_is_compared_whole():
    """Many records sharing a band value (more than the vectorised offsets cover) still give every close pair."""
    hashes = np.array([(7 << 40) | (1 << b) for b in range(40)], dtype=np.int64)  # 40 hashes, pairwise distance 2
    batch = pa.table({"record_id": [f"r{i:02d}" for i in range(40)], "phash": pa.array(hashes, pa.int64())})
    pairs = candidate_pairs(band_rows(batch, 2), 2)
    assert pairs.num_rows == 40 * 39 // 2


def test_band_keys_of_k0_are_the_hashes():
    h = np.array([5, -3], np.int64)
    rows, keys = band_keys(h, 0)
    assert rows.tolist() == [0, 1] and keys.tolist() == [5, -3]


def test_phash_stage_measures_and_keeps_a_known_hash(corpus):
    out, items = corpus
    clean = [it for it in items if it.planted is None][:3]
    rows = [{"record_id": f"t:{i}", "source": "t", "image": (out / it.filename).read_bytes()} for i, it in enumerate(clean)]
    rows.append({"record_id": "t:known", "source": "t", "image": rows[0]["image"], "phash": 12345})
    rows.append({"record_id": "t:text", "source": "t", "image": None})
    kept, rejects = split_rejects(run_local(records_from_pylist(rows), [PHash()]))
    assert rejects.num_rows == 0
    got = dict(zip(kept.column("record_id").to_pylist(), kept.column("phash").to_pylist()))
    assert got["t:0"] == phash64(rows[0]["image"]) and got["t:known"] == 12345 and got["t:text"] is None


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_decontaminate_drops_near_copies_of_eval_images(corpus, tmp_path):
    out, items = corpus
    clean = [it for it in items if it.planted is None]
    evals = tmp_path / "eval" / "set1"
    evals.mkdir(parents=True)
    for it in clean[:2]:
        (evals / it.filename).write_bytes((out / it.filename).read_bytes())
    table = eval_hashes(tmp_path / "eval")
    assert table.num_rows == 2 and table.column("name").to_pylist()[0].startswith("set1/")
    with Image.open(out / clean[0].filename) as im:
        reencoded = _jpeg(im.convert("RGB"), 60)
    rows = [{"record_id": "t:copy", "source": "t", "image": reencoded},
            {"record_id": "t:other", "source": "t", "image": (out / clean[5].filename).read_bytes()}]
    stage = Decontaminate(table, max_distance=4)
    kept, rejects = split_rejects(run_local(records_from_pylist(rows), [PHash(), stage]))
    assert kept.column("record_id").to_pylist() == ["t:other"]
    (rej,) = rejects.to_pylist()
    assert rej["record_id"] == "t:copy" and rej["stage"] == "decontaminate" and rej["reason"] == "eval_overlap"
    assert f"set1/{clean[0].filename}" in rej["detail"] and "hamming distance" in rej["detail"]


def test_decontaminate_refuses_a_folder_without_images(tmp_path):
    from curation.errors import InputError

    with pytest.raises(InputError, match="no decodable images"):
        eval_hashes(tmp_path)


def test_a_large_set_of_identical_hashes_is_a_star_and_decides_as_the_full_pairs():
    """300 copies of one placeholder (one hash) among near neighbours: the grouping lists a star, not the
    45,000 pairs of the copies with each other and with every neighbour, and the decisions are those of the
    full list of pairs (brute force)."""
    from filters.dedup_exact import decide_duplicates
    from filters.phash import IDENTICAL_STAR

    rng = np.random.default_rng(7)

    def flip(h: int, *bits: int) -> int:  # h with those bits flipped, as a signed 64-bit value
        u = (h & (2**64 - 1)) ^ sum(1 << b for b in bits)
        return u - 2**64 if u >= 2**63 else u

    base = 0x0F0F_3C3C_5A5A_9999
    hashes = [base] * 300 + [flip(base, 3, 17)] * 40 + [flip(base, 1)] + [flip(base, 5, 9, 30)] * 3
    hashes += [int(x) for x in rng.integers(-(2**62), 2**62, 200)]  # unrelated
    ids = [f"r{i:04d}" for i in rng.permutation(len(hashes))]  # the copies' ids interleave with the others'
    batch = pa.table({"record_id": ids, "phash": pa.array(hashes, pa.int64())})
    k = 4
    got = candidate_pairs(band_rows(batch, k), k)
    full_i, full_j, full_d = [], [], []
    h = np.array(hashes, dtype=np.int64)
    for i in range(len(h)):
        d = hamming_array(h[i], h[i + 1:])
        for j in np.flatnonzero(d <= k):
            full_i.append(i)
            full_j.append(i + 1 + j)
            full_d.append(int(d[j]))
    from filters.phash import pairs_table

    full = pairs_table(batch, full_i, full_j, full_d)
    assert full.num_rows > 50_000 and got.num_rows < 1_000 and 300 > IDENTICAL_STAR
    want = {r["record_id"]: (r["kept"], r["reason"]) for r in decide_duplicates([full]).to_pylist()}
    assert {r["record_id"]: (r["kept"], r["reason"]) for r in decide_duplicates([got], k).to_pylist()} == want
    assert {r["record_id"]: (r["kept"], r["reason"]) for r in decide_duplicates([full], k).to_pylist()} == want
    assert len(want) >= 300


def test_a_hot_bucket_of_distinct_hashes_is_compared_in_blocks_as_brute_force():
    """600 distinct hashes sharing a band (a hot bucket, beyond the vectorised offsets): the pairs within k,
    compared a block of rows at a time, are exactly the brute-force pairs, whatever the block size."""
    from filters.phash import _near_in_group

    rng = np.random.default_rng(11)
    low = rng.integers(0, 2**50, 600, dtype=np.int64)
    hashes = (np.int64(0x1ABC) << np.int64(50)) | low  # the top 14 bits shared: one band value for k = 4
    for i in range(0, 600, 7):  # near copies inside the bucket
        hashes[i + 1 if i + 1 < 600 else i] = hashes[i] ^ np.int64(0b1010)
    want = {(i, i + 1 + j, int(d[j])) for i in range(600) for d in [hamming_array(hashes[i], hashes[i + 1:])]
            for j in np.flatnonzero(d <= 4)}
    for block in (1, 599, 5_000, 1 << 22):
        got = {(int(a), int(b), int(d)) for a, b, d in zip(*_near_in_group(hashes, 4, block))}
        assert got == want and len(want) >= 80
    ids = [f"h{i:03d}" for i in range(600)]
    batch = pa.table({"record_id": ids, "phash": pa.array(hashes, pa.int64())})
    pairs = {(r["a"], r["b"], r["distance"]) for r in candidate_pairs(band_rows(batch, 4), 4).to_pylist()}
    assert pairs == {(ids[i], ids[j], d) for i, j, d in want}
