"""Caption cleaning (filters/text.py): real captions pass, web-style junk goes with the right reason."""

import json
from pathlib import Path

import pyarrow as pa
import pytest

from curation.errors import InputError
from curation.runtime import run_local, split_rejects
from curation.schema import records_from_pylist
from filters import FILTERS, filter_stages
from filters.text import DEFAULT_SCRIPTS, TextFilter, TextRules, clean_caption, count_words
from formats.tokenizer import get_tokenizer
from jobs.web_pairs import WebPairsConfig

REAL = Path(__file__).resolve().parents[1] / "data" / "real-annotations"


def coco_captions() -> list[str]:
    data = json.loads((REAL / "coco2017" / "captions_val2017.sample.json").read_text())
    return [a["caption"] for a in data["annotations"]]


def textcaps_items() -> list[dict]:
    return json.loads((REAL / "textcaps" / "TextCaps_0.1_val.sample.json").read_text())["data"]


def rec(i, caps, **extra):
    return {"record_id": f"t:{i}", "source": "t", "image": b"x", "width": 64, "height": 64, "captions": caps, **extra}


def run(rows, rules=None):
    """(kept records, reject rows of whole records, caption reject rows that the sink adds)"""
    out = run_local(records_from_pylist(rows), [TextFilter(rules)])
    kept, rejects = split_rejects(out)
    return kept, rejects, [r for v in out.column("item_rejects").to_pylist() if v for r in json.loads(v)]


# ------------------------------------------------------------------ real captions: none dropped


def test_no_real_coco_or_textcaps_caption_is_dropped():
    caps = coco_captions() + [s for item in textcaps_items() for s in item["reference_strs"]]
    assert len(caps) == 600  # 100 COCO + 100 images x 5 TextCaps references
    rules = TextRules()
    dropped = [(c, rules.check(clean_caption(c))) for c in caps if rules.check(clean_caption(c))]
    assert dropped == []


def test_real_records_with_five_captions_each_keep_every_caption():
    """TextCaps as records (5 references per image) through the stage: all kept, no reject rows."""
    data = textcaps_items()
    rows = [rec(i, item["reference_strs"]) for i, item in enumerate(data)]
    kept, rejects, items = run(rows)
    assert kept.num_rows == 100 and rejects.num_rows == 0
    out = kept.column("captions").to_pylist()
    assert [len(c) for c in out] == [len(item["reference_strs"]) for item in data]
    # cleaning changes nothing but runs of spaces in these human captions
    assert out == [[" ".join(s.split()) for s in item["reference_strs"]] for item in data]
    assert items == []


# ------------------------------------------------------------------ web-style captions


@pytest.mark.parametrize(
    "caption, reason",
    [
        # HTML leaves nothing
        ("<img src='photo.gif'>", "empty_text"),
        ("&nbsp; <br/> &#8203;", "empty_text"),
        # URLs
        ("Check out https://example.com/pics for more photos", "caption_url"),
        ("Visit www.example.org for the full gallery", "caption_url"),
        ("For prints contact jane.doe@example.com today", "caption_url"),
        ("Summer dresses on sale at bestdeals.com/summer-sale now", "caption_url"),
        ("<a href=\"http://spam.example/\">http://spam.example/</a> cheap watches", "caption_url"),
        # file names
        ("IMG_20190512_123456.jpg", "caption_file_name"),
        ("DSC01234", "caption_file_name"),
        ("sunset_beach_final_v2", "caption_file_name"),
        ("Our holiday photo vacation2019.jpeg from Spain", "caption_file_name"),
        # boilerplate
        ("Beautiful young woman smiling at the camera stock photo", "caption_boilerplate"),
        ("Happy family walking on the beach, royalty free image", "caption_boilerplate"),
        ("Image may contain: 2 people, people smiling, outdoor", "caption_boilerplate"),
        ("Mountain lake at dawn &copy; Shutterstock", "caption_boilerplate"),
        ("No image available", "caption_boilerplate"),
        # emoji
        ("My dog playing at the park 🐶", "caption_emoji"),
        ("Best day ever with my friends ❤️", "caption_emoji"),
        ("I ❤ New York t-shirt on a table", "caption_emoji"),
        ("Supporting the team tonight 🇫🇷", "caption_emoji"),
        ("Call me 1️⃣ more time please", "caption_emoji"),
        # other scripts
        ("Москва ночью, вид на Кремль", "caption_script_not_allowed"),
        ("منظر طبيعي للجبال في الصباح", "caption_script_not_allowed"),
        ("Ένα λευκό σπίτι δίπλα στη θάλασσα", "caption_script_not_allowed"),
        ("एक सुंदर सूर्यास्त समुद्र के ऊपर", "caption_script_not_allowed"),
        ("A bowl of ต้มยำกุ้ง soup on a table", "caption_script_not_allowed"),
        # irregular repetition
        ("Amazing view from the top!!!!!!", "caption_repetition"),
        ("sooooooo cute puppy in a basket", "caption_repetition"),
        ("dog dog dog dog dog toys for sale", "caption_repetition"),
        ("Check this out -------- best bargain", "caption_repetition"),
        # length
        ("sunset", "caption_too_short"),
        ("<b>Sunset</b>", "caption_too_short"),
        ("!!! ???", "caption_too_short"),
        (", ".join(f"keyword{i} tag{i}" for i in range(60)), "caption_too_many_tokens"),
    ],
)
def test_web_caption_is_dropped_with_its_reason(caption, reason):
    kept, rejects, items = run([rec(0, [caption])])
    assert kept.num_rows == 0 and items == []
    assert rejects.column("reason").to_pylist() == [reason]
    assert rejects.column("stage").to_pylist() == ["text"]
    assert rejects.column("record_id").to_pylist() == ["t:0"]
    assert rejects.column("detail")[0].as_py().startswith("caption 0: ")


@pytest.mark.parametrize(
    "caption, cleaned",
    [
        ("<p>A red <b>barn</b> in a green field</p>", "A red barn in a green field"),
        ("Fish &amp; chips on a white plate", "Fish & chips on a white plate"),
        ("Fish &amp;amp; chips on a plate", "Fish & chips on a plate"),  # double-escaped
        ("&lt;i&gt;Two&lt;/i&gt; cats on a sofa", "Two cats on a sofa"),  # escaped tags are tags
        ("A <!-- tracking --> kitten<script>var x = '<b>';</script> asleep", "A kitten asleep"),
        ("A cat\u200b on a\u00a0mat\n\n in  the sun", "A cat on a mat in the sun"),
        ("a sign: 3 < 4 and 5 > 2", "a sign: 3 < 4 and 5 > 2"),  # not tags
        ("一只猫坐在窗台上", "一只猫坐在窗台上"),
        ("東京タワーの夜景", "東京タワーの夜景"),
        ("서울의 밤 풍경", "서울의 밤 풍경"),
        ("Café crème à Paris, près de la Seine", "Café crème à Paris, près de la Seine"),
        ("A price tag of €5 beside 100000 views, ©2020 Nike™", "A price tag of €5 beside 100000 views, ©2020 Nike™"),
        ("A bottle of XXXX bitter beer", "A bottle of XXXX bitter beer"),  # a brand (TextCaps)
        ("a banner for arsenaldirect.com in a stadium", "a banner for arsenaldirect.com in a stadium"),  # text in the image
        ("Wait... what is that?", "Wait... what is that?"),
    ],
)
def test_clean_captions_are_kept_cleaned(caption, cleaned):
    kept, rejects, items = run([rec(0, [caption])])
    assert rejects.num_rows == 0 and items == []
    assert kept.column("captions").to_pylist() == [[cleaned]]


def test_words_and_tokens_are_counted_as_documented():
    assert count_words("一只猫") == 3 and count_words("a cat - ok") == 3 and count_words("!!! ???") == 0
    caption = "a photo of a cat"
    n = len(get_tokenizer("qwen-vl").encode_ordinary(caption))
    assert TextRules(max_tokens=n).check(caption) is None
    drop = TextRules(max_tokens=n - 1).check(caption)
    assert drop.reason == "caption_too_many_tokens" and drop.detail == f"{n} tokens > {n - 1}"


def test_script_allow_list_is_a_setting():
    russian = "Москва ночью, вид на Кремль"
    assert TextRules().check(russian).reason == "caption_script_not_allowed"
    assert TextRules(scripts=("Latin", "Cyrillic")).check(russian) is None
    assert TextRules(scripts=("Latin",)).check("一只猫坐在窗台上").reason == "caption_script_not_allowed"
    with pytest.raises(InputError, match="unknown Unicode script 'Klingon'"):
        TextRules(scripts=("Latin", "Klingon"))


# ------------------------------------------------------------------ several captions


def test_a_bad_caption_of_several_is_removed_with_its_own_reject_row():
    caps = ["A man riding a horse on a beach.", "horse stock photo", "Two horses 🐴 at sunset", "A rider at the shore."]
    kept, rejects, items = run([rec(0, caps)])
    assert kept.column("captions").to_pylist() == [["A man riding a horse on a beach.", "A rider at the shore."]]
    assert [(r["record_id"], r["stage"], r["reason"]) for r in items] == [
        ("t:0", "text", "caption_boilerplate"), ("t:0", "text", "caption_emoji")]
    assert items[0]["detail"].startswith("caption 1: ") and items[1]["detail"].startswith("caption 2: ")
    assert rejects.num_rows == 0  # the record itself stays


def test_a_record_whose_captions_all_fail_is_dropped_once():
    kept, rejects, items = run([rec(0, ["sunset", "see www.example.com", "🌅🌅"])])
    assert kept.num_rows == 0
    assert rejects.column("reason").to_pylist() == ["caption_too_short"]  # the first caption's reason
    detail = rejects.column("detail")[0].as_py()
    assert "all 3 captions rejected (1: caption_url, 2: caption_emoji)" in detail


def test_a_record_with_other_annotations_keeps_them_without_captions():
    row = rec(0, ["sunset"], qa=[{"question": "What is shown?", "answer": "a sunset"}])
    kept, rejects, items = run([row])
    assert kept.num_rows == 1 and rejects.num_rows == 0
    assert kept.column("captions").to_pylist() == [[]]
    assert [r["reason"] for r in items] == ["caption_too_short"]


def test_no_captions_is_not_this_filters_business():
    kept, rejects, items = run([rec(0, []), rec(1, None)])
    assert kept.num_rows == 2 and rejects.num_rows == 0


def test_item_rejects_reach_the_rejects_table_through_the_runner(tmp_path):
    """The runner's sink turns the caption rows into reject rows, counted under stage `text`."""
    import pyarrow.parquet as pq

    from curation.storage.dataset import Dataset, DatasetWriter
    from curation.runner import ParquetReader, Pipeline, Sink, parquet_shards, run_pipeline

    rows = [rec(0, ["A red barn in a field.", "barn 🐄"]), rec(1, ["sunset"]), rec(2, ["A dog on a sofa."])]
    src = tmp_path / "in.parquet"
    pq.write_table(records_from_pylist(rows), src)
    with DatasetWriter(tmp_path / "out") as writer:
        run_pipeline(Pipeline(ParquetReader(), [TextFilter(), Sink("records")]), parquet_shards([(src, 3)]), writer,
                     executor="local")
        m = writer.close()
    out = Dataset(tmp_path / "out")
    assert sorted(out.read("records").column("record_id").to_pylist()) == ["t:0", "t:2"]
    rej = out.read("rejects").to_pylist()
    assert sorted((r["record_id"], r["reason"]) for r in rej) == [("t:0", "caption_emoji"), ("t:1", "caption_too_short")]
    assert m["stages"]["text"]["in"] == 3 and m["stages"]["text"]["out"] == 2
    assert m["stages"]["text"]["dropped"] == {"caption_emoji": 1, "caption_too_short": 1}


# ------------------------------------------------------------------ registry and config


def test_registered_and_configured_from_a_job_config():
    assert "text" in FILTERS
    cfg = WebPairsConfig(urls="u", out="o", filters=("text",), text_min_words=3, text_max_tokens=64,
                         text_scripts=("Latin",), text_boilerplate=("promo",), format="qwen2-vl")
    [stage] = filter_stages(cfg.filters, cfg)
    assert isinstance(stage, TextFilter)
    r = stage.rules
    assert (r.min_words, r.max_tokens, r.scripts, r.boilerplate, r.format) == (3, 64, ("Latin",), ("promo",), "qwen2-vl")
    assert WebPairsConfig(urls="u", out="o").text_scripts == DEFAULT_SCRIPTS
    with pytest.raises(InputError, match="text_max_tokens >= 1"):
        filter_stages(["text"], WebPairsConfig(urls="u", out="o", text_max_tokens=0))


def test_measured_columns_stay_on_dropped_rows_as_nulls():
    """Rows an earlier stage dropped pass through untouched (base class contract)."""
    t = records_from_pylist([rec(0, ["sunset"]), rec(1, ["A cat on a mat."])])
    t = t.append_column("reject_stage", pa.array(["basic", None])).append_column("reject_reason", pa.array(["image_too_small", None]))
    t = t.append_column("reject_detail", pa.array(["x", None]))
    out = TextFilter()(t)
    by_id = {r["record_id"]: r for r in out.to_pylist()}
    assert by_id["t:0"]["reject_stage"] == "basic" and by_id["t:0"]["captions"] == ["sunset"]
    assert by_id["t:1"]["reject_stage"] is None
