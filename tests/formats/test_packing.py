"""Packing (spec section 4): same task only, at most N tokens, offsets, no truncation."""

import hashlib

import pytest

from formats.packing import fill_ratio, pack_sequences, sequences_table


def _check(seqs, items, n):
    size = {sid: k for sid, _, k in items}
    task = {sid: t for sid, t, _ in items}
    assert sorted(s for q in seqs for s in q.sample_ids) == sorted(size)
    for q in seqs:
        assert q.num_tokens <= n
        assert {task[s] for s in q.sample_ids} == {q.task}
        pos = 0
        for sid, off in zip(q.sample_ids, q.offsets):
            assert off == pos
            pos += size[sid]
        assert pos == q.num_tokens


@pytest.mark.parametrize(
    "sizes,n,expected_bins",
    [
        ([1000, 1000, 48], 2048, 1),
        ([1500, 600, 500, 1400], 2048, 2),  # best fit: 1500+500, 1400+600
        ([2048, 1, 1], 2048, 2),
        ([700] * 6, 2048, 3),
    ],
)
def test_pack_sizes(sizes, n, expected_bins):
    items = [(f"s{i}", "caption", k) for i, k in enumerate(sizes)]
    seqs = pack_sequences(items, n)
    assert len(seqs) == expected_bins
    _check(seqs, items, n)


def test_tasks_never_mix_and_order_does_not_matter():
    items = [(f"s{i}", "caption" if i % 3 else "vqa", 100 + (i * 37) % 500) for i in range(300)]
    seqs = pack_sequences(items, 2048)
    _check(seqs, items, 2048)
    assert seqs == pack_sequences(list(reversed(items)), 2048)
    assert fill_ratio(seqs, 2048) > 0.95


def test_too_long_raises_never_truncates():
    with pytest.raises(ValueError, match="2049 tokens > pack size 2048"):
        pack_sequences([("a", "caption", 2049)], 2048)
    with pytest.raises(ValueError, match="positive"):
        pack_sequences([], 0)


def _expected_sequence_id(task, sample_ids):
    """The documented id, computed here by hand: 8-byte BLAKE2b of the task, then 0x1f + each member id in order."""
    h = hashlib.blake2b(digest_size=8)
    h.update(task.encode("utf-8"))
    for sid in sample_ids:
        h.update(b"\x1f")
        h.update(sid.encode("utf-8"))
    return h.hexdigest()


def test_fill_ratio_and_table():
    seqs = pack_sequences([("a", "t", 512), ("b", "t", 512)], 2048)
    assert fill_ratio(seqs, 2048) == 0.5
    assert fill_ratio([], 2048) == 0.0
    t = sequences_table(seqs, "qwen-vl").to_pylist()
    assert t == [{"sequence_id": _expected_sequence_id("t", ["a", "b"]), "task": "t", "format": "qwen-vl", "sample_ids": ["a", "b"], "offsets": [0, 512], "num_tokens": 1024}]


def test_sequence_ids_name_task_and_members():
    items = [(f"s{i}", "caption" if i % 3 else "vqa", 100 + (i * 37) % 500) for i in range(300)]
    seqs = pack_sequences(items, 2048)
    assert [q.sequence_id for q in seqs] == [_expected_sequence_id(q.task, q.sample_ids) for q in seqs]
    assert len({q.sequence_id for q in seqs}) == len(seqs)
    # the same members under another task are another sequence
    (x,) = pack_sequences([("a", "t", 512), ("b", "t", 512)], 2048)
    (y,) = pack_sequences([("a", "u", 512), ("b", "u", 512)], 2048)
    assert x.sample_ids == y.sample_ids and x.sequence_id != y.sequence_id
