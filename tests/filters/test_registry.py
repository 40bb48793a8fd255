"""The filter registry: jobs and `curate filter` build their stages from FILTERS by name."""

import pytest

from curation.errors import InputError
from filters import FILTERS, BasicFilter, ClipPreprocess, ClipScore, TextFilter, filter_stages
from filters.phash import PHash
from jobs.demo import DEMO_CLIP_DIR
from jobs.web_pairs import WebPairsConfig


def test_every_registered_filter_makes_its_stages_from_a_job_config():
    cfg = WebPairsConfig(urls="u", out="o", min_side=50, clip_model=str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"),
                         clip_checkpoint=str(DEMO_CLIP_DIR / "demo_clip.pt"), min_clip_score=0.2, clip_gpus=0.0)
    stages = filter_stages(list(FILTERS), cfg)
    assert [type(s) for s in stages] == [BasicFilter, ClipPreprocess, ClipScore, TextFilter, PHash]
    assert stages[0].min_side == 50 and stages[2].min_score == 0.2


def test_order_and_selection_follow_the_config():
    cfg = WebPairsConfig(urls="u", out="o", clip_model=None)
    assert filter_stages(["clip", "basic"], cfg)[0].name == "basic"  # clip without a model makes no stage
    assert filter_stages([], cfg) == []
    with pytest.raises(InputError, match="unknown filter 'dedup' \\(known: basic, clip, text, phash\\)"):
        filter_stages(["basic", "dedup"], cfg)
