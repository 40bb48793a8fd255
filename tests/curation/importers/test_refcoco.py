import json
import pickle
from collections import Counter

import pytest

from curation.errors import InputError
from curation.importers.refcoco import load_refs_pickle

REFS = [
    {"ref_id": 0, "ann_id": 11, "image_id": 9, "split": "train", "file_name": "COCO_train2014_000000000009_11.jpg",
     "sentences": [{"sent_id": 0, "sent": "the bowl on the right", "raw": "The bowl on the right"},
                   {"sent_id": 1, "sent": "right bowl", "raw": "right bowl"}]},
    {"ref_id": 1, "ann_id": 12, "image_id": 9, "split": "train", "sentences": [{"sent_id": 2, "sent": "flat thing"}]},
    {"ref_id": 2, "ann_id": 99, "image_id": 9, "split": "train", "sentences": [{"sent_id": 3, "sent": "lost"}]},
]
INSTANCES = {
    "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 1024, "height": 768}],
    "annotations": [{"id": 11, "image_id": 9, "bbox": [512, 384, 512, 384], "category_id": 51},
                    {"id": 12, "image_id": 9, "bbox": [10, 10, 0, 5], "category_id": 51}],
    "categories": [{"id": 51, "name": "bowl"}],
}


@pytest.mark.parametrize("form", ["pickle", "json"])
def test_refcoco_one_region_per_sentence(form, tmp_path, make_images, run_ingest):
    if form == "pickle":
        refs = tmp_path / "refs(unc).p"
        refs.write_bytes(pickle.dumps(REFS, protocol=2))
    else:
        refs = tmp_path / "refs.json"
        refs.write_text(json.dumps(REFS))
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps(INSTANCES))
    folder = make_images(tmp_path / "train2014", {"COCO_train2014_000000000009.jpg": (1024, 768)})
    manifest, records, rejects = run_ingest({"refcoco": [refs, inst]}, folder)
    (r,) = records
    assert r["record_id"] == "coco:9"
    assert r["regions"] == [
        {"phrase": "the bowl on the right", "boxes": [[512.0, 384.0, 1024.0, 768.0]]},
        {"phrase": "right bowl", "boxes": [[512.0, 384.0, 1024.0, 768.0]]},
    ]
    assert json.loads(r["meta"]) == {"refcoco_split": "train"}
    assert Counter(x["reason"] for x in rejects) == {"box_empty": 1, "box_unknown": 1}
    assert manifest["ingest"]["annotations_read"] == {"refcoco": 4}


def test_a_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(InputError, match="only plain lists"):
        load_refs_pickle(path)
