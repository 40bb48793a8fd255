"""Filters: each measures columns, then decides keep or drop with a reason.

Adding a filter = one file here, one line in FILTERS, one test file.
"""

from filters.base import Drop, Filter
from filters.basic import BasicFilter
from filters.clip_score import ClipModelSpec, ClipPreprocess, ClipScore

__all__ = ["Drop", "Filter", "BasicFilter", "ClipModelSpec", "ClipPreprocess", "ClipScore", "FILTERS"]

# name -> stage classes, in pipeline order
FILTERS = {
    "basic": (BasicFilter,),
    "clip": (ClipPreprocess, ClipScore),
}
