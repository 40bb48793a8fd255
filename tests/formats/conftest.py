"""Small records shared by the formats tests."""

import pytest

from curation.schema import records_from_pylist

PNG = b"\x89PNG fake bytes"


def rec(**kw):
    base = {"record_id": "demo:1", "source": "demo", "image": PNG, "width": 640, "height": 480}
    base.update(kw)
    return base


@pytest.fixture
def mixed_records():
    return records_from_pylist(
        [
            rec(
                record_id="coco/000000391895.jpg",
                captions=["A man riding a motorcycle on a dirt road."],
                qa=[{"question": "What color is the bus?", "answer": "Red."}],
                regions=[
                    {"phrase": "a brown dog lying on the grass", "boxes": [[100, 50, 300, 400]]},
                    {"phrase": "bad", "boxes": [[5, 5, 3, 3]]},
                ],
                ocr=[{"text": "STOP", "quad": [10, 10, 100, 10, 100, 50, 10, 50]}],
                clip_score=0.31,
                meta={"origin": "test"},
            ),
            {"record_id": "wiki:1", "source": "wiki", "text": "Hello world."},
            rec(record_id="k" * 256, captions=["a"]),
        ]
    )
