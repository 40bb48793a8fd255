"""Filters: each measures columns, then decides keep or drop with a reason.

Adding a filter = one file here (its stages and a `from_config(cfg)` that
makes them from a job config), one line in FILTERS, one test file. Jobs and
`curate filter` run the filters named by their `filters` setting, in order.
"""

from filters import basic, clip_score, phash, text
from filters.base import Drop, Filter
from filters.basic import BasicFilter
from filters.clip_score import ClipModelSpec, ClipPreprocess, ClipScore
from filters.text import TextFilter

__all__ = ["Drop", "Filter", "BasicFilter", "ClipModelSpec", "ClipPreprocess", "ClipScore", "TextFilter", "FILTERS", "filter_stages"]

# name -> from_config(cfg) -> the filter's stages, in pipeline order
FILTERS = {
    "basic": basic.from_config,
    "clip": clip_score.from_config,
    "text": text.from_config,
    "phash": phash.from_config,  # measures `phash` only; the grouping is the dedup job's (jobs/dedup.py)
}


def filter_stages(names, cfg) -> list:
    """The stages of the filters `names`, in order, for the job config `cfg`."""
    from curation.errors import InputError

    stages = []
    for name in names:
        if name not in FILTERS:
            raise InputError(f"unknown filter {name!r} (known: {', '.join(FILTERS)})")
        stages += FILTERS[name](cfg)
    return stages
