import pytest

from curation.runtime import run_local, split_rejects
from curation.schema import records_from_pylist
from filters.basic import BasicFilter


def rec(i, w, h, caps, image=b"x"):
    return {"record_id": f"t:{i}", "source": "t", "image": image, "width": w, "height": h, "captions": caps}


@pytest.mark.parametrize(
    "row,reason",
    [
        (rec(0, 64, 64, ["a red circle"]), None),
        (rec(1, 31, 64, ["a red circle"]), "image_too_small"),
        (rec(2, 400, 64, ["a red circle"]), "aspect_ratio_too_large"),
        (rec(3, 64, 64, ["circle"]), "caption_too_short"),
        (rec(4, 64, 64, ["word " * 300]), "caption_too_long"),
        (rec(5, 64, 64, []), None),  # VQA-only records have no caption: not a caption filter's business
        (rec(6, None, None, ["a red circle"]), "size_unknown"),
        (rec(8, 0, 0, ["a red circle"]), "invalid_size"),
        (rec(9, -640, 480, ["a red circle"]), "invalid_size"),
        (rec(7, None, None, None, image=None), None),  # a text document has no image
    ],
)
def test_basic_filter_reasons(row, reason):
    kept, rejects = split_rejects(run_local(records_from_pylist([row]), [BasicFilter()]))
    if reason is None:
        assert kept.num_rows == 1 and rejects.num_rows == 0
    else:
        assert kept.num_rows == 0
        assert rejects.to_pylist()[0]["reason"] == reason
        assert rejects.to_pylist()[0]["stage"] == "basic"


def test_already_rejected_rows_are_not_judged_again():
    f = BasicFilter()
    first = run_local(records_from_pylist([rec(1, 10, 10, ["a b"])]), [f])
    again = f(first)
    assert again.column("reject_stage").to_pylist() == ["basic"]
    assert again.column("reject_reason").to_pylist() == ["image_too_small"]
    assert again.column("image").to_pylist() == [None]  # dropped rows travel light


def test_bad_settings_are_value_errors():
    with pytest.raises(ValueError, match="min_side"):
        BasicFilter(min_side=0)
