"""`vg-qa`: Visual Genome `question_answers.json` + `image_data.json` -> QA pairs.

Entries are grouped by image, so records stream out one image at a time;
memory holds the image_data table and one image's questions.
"""

from __future__ import annotations

from typing import Iterator

from curation.importers._vg import split_vg_files, vg_declarations
from curation.importers.base import Importer, Item, partial
from curation.importers.jsonstream import iter_array

__all__ = ["VgQa"]


class VgQa(Importer):
    kind = "vg-qa"
    default_source = "vg"
    grouped = True

    def read(self) -> Iterator[Item]:
        image_data, files = split_vg_files(self.paths, "qas", self.kind)
        yield from vg_declarations(image_data, self.rid, self.source)
        for path in files:
            for entry in iter_array(path):
                if not isinstance(entry, dict):
                    self.items_read += 1
                    yield self.reject(None, "invalid_annotation", f"entry {entry!r:.60} is not a JSON object", path)
                    continue
                image_id = entry.get("id", entry.get("image_id"))
                qa, refs = [], []
                for q in entry.get("qas") or ():
                    self.items_read += 1
                    if not isinstance(q, dict):
                        yield self.reject(image_id, "invalid_annotation", f"question {q!r:.60} is not a JSON object", path)
                        continue
                    qa.append({"question": q.get("question"), "answer": q.get("answer")})
                    refs.append(f"{path.name}: question {q.get('qa_id')}")
                if qa:
                    yield "record", partial(self.rid(image_id), self.source, qa=qa, refs=refs)
