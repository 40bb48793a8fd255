"""`textvqa`: TextVQA JSON -> QA pairs.

The answer is the most frequent of the human answers, ties going to the one
given first; all answers stay in `meta.answers` (one list per question, in
the order of `qa`). Each question names its image and size; questions are
grouped by image in memory until the end of the file (the file is not
ordered by image), so memory grows with the questions kept, not the file.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator, Sequence

from curation.importers.base import Importer, Item, partial
from curation.importers.jsonstream import iter_members
from curation.reasons import INVALID_ANNOTATION

__all__ = ["TextVqa", "majority_answer"]


def majority_answer(answers: Sequence[str]) -> str | None:
    """The most frequent answer; among equally frequent ones, the first given."""
    if not answers:
        return None
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


class TextVqa(Importer):
    kind = "textvqa"
    default_source = "textvqa"

    def read(self) -> Iterator[Item]:
        for path in self.paths:
            for key, item in iter_members(path):
                if key != "data":
                    continue
                if not isinstance(item, dict):
                    self.items_read += 1
                    yield self.reject(None, "invalid_annotation", f"item {item!r:.60} of 'data' is not a JSON object", path)
                    continue
                self.items_read += 1
                image_id = item.get("image_id")
                if image_id is None:
                    yield self.reject(None, INVALID_ANNOTATION, f"question {item.get('question_id')} has no image_id", path)
                    continue
                answers = list(item.get("answers") or [])
                yield "record", partial(
                    self.rid(image_id),
                    self.source,
                    width=item.get("image_width"),
                    height=item.get("image_height"),
                    url=item.get("flickr_original_url"),
                    image_files=[f"{image_id}.jpg"],
                    declared=True,
                    qa=[{"question": item.get("question"), "answer": majority_answer(answers)}],
                    refs=[f"{path.name}: question {item.get('question_id')}"],
                    meta={"answers": [answers]},
                )
