"""`vqav2`: VQAv2 questions + annotations files -> QA pairs on COCO images.

The answer is `multiple_choice_answer`. Questions are joined to annotations by
`question_id`: memory holds the questions (id, image, text) and the QA pairs
grouped by image; the files stream. Images are COCO images, so the default
source is `coco` and the records merge with COCO captions and instances.
Image file names tried: `COCO_{data_subtype}_{id:012d}.jpg` (2014 layout),
then `{id:012d}.jpg` (2017 layout).
"""

from __future__ import annotations

from typing import Any, Iterator

from curation.errors import InputError
from curation.importers.base import Importer, Item, need_field, need_object, partial
from curation.importers.jsonstream import iter_members
from curation.reasons import ANSWER_MISSING, QUESTION_UNKNOWN

__all__ = ["VqaV2"]


def _file_role(path) -> str:
    for key, _ in iter_members(path):
        if key in ("questions", "annotations"):
            return key
    raise InputError(f"{path}: neither a VQAv2 questions file nor an annotations file (no 'questions' or 'annotations' list)")


class VqaV2(Importer):
    kind = "vqav2"
    default_source = "coco"

    def read(self) -> Iterator[Item]:
        roles = {p: _file_role(p) for p in self.paths}
        questions: dict[Any, tuple[Any, str]] = {}
        subtype: dict[Any, str] = {}
        q_files = [p for p, r in roles.items() if r == "questions"]
        a_files = [p for p, r in roles.items() if r == "annotations"]
        if not q_files or not a_files:
            raise InputError("vqav2: give both the questions file and the annotations file")
        for path in q_files:
            sub = None
            for key, value in iter_members(path):
                if key == "data_subtype":
                    sub = value
                elif key == "questions":
                    need_object(value, path, "an entry of 'questions'")
                    qid, image_id = need_field(value, "question_id", path, "question"), need_field(value, "image_id", path, "question")
                    questions[qid] = (image_id, value.get("question"))
                    if sub:
                        subtype[image_id] = sub
        answered = set()
        for path in a_files:
            for key, ann in iter_members(path):
                if key != "annotations":
                    continue
                self.items_read += 1
                if not isinstance(ann, dict):
                    yield self.reject(None, "invalid_annotation", f"annotation {ann!r:.60} is not a JSON object", path)
                    continue
                qid = ann.get("question_id")
                if qid not in questions:
                    yield self.reject(ann.get("image_id"), QUESTION_UNKNOWN, f"annotation of question {qid}: not in the questions file", path)
                    continue
                answered.add(qid)
                image_id, question = questions[qid]
                padded = f"{image_id:012d}" if isinstance(image_id, int) else str(image_id)
                files = [f"{padded}.jpg"]
                if image_id in subtype:
                    files.insert(0, f"COCO_{subtype[image_id]}_{padded}.jpg")
                yield "record", partial(
                    self.rid(image_id),
                    self.source,
                    image_files=files,
                    declared=True,
                    qa=[{"question": question, "answer": ann.get("multiple_choice_answer")}],
                    refs=[f"{path.name}: question {qid}"],
                )
        for qid, (image_id, _) in questions.items():
            if qid not in answered:
                self.items_read += 1
                yield self.reject(image_id, ANSWER_MISSING, f"question {qid} has no annotation (answers)", q_files[0])
