"""What a download or CLIP worker imports: only what it runs (fresh interpreters, so nothing is imported yet)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEMO_CLIP = ROOT / "jobs" / "assets" / "demo-clip"


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_download_loop_loads_img2datasets_downloader_without_its_package_or_wandb():
    got = _python(
        "import json, sys\n"
        "from curation.crawl.fetch import FetchPolicy, fetching, img2dataset_module\n"
        "d = img2dataset_module('downloader')\n"
        "with fetching(FetchPolicy()):\n"
        "    guarded = d.download_image_with_retry.__qualname__\n"
        "print(json.dumps({'guarded': guarded, 'loaded': sorted(m for m in ('img2dataset', 'torch', 'wandb') if m in sys.modules)}))\n"
    )
    assert got == {"guarded": "_Fetcher.download", "loaded": []}


def test_a_later_import_of_img2dataset_gets_the_whole_package():
    got = _python(
        "import json\n"
        "from curation.crawl.fetch import img2dataset_module\n"
        "d = img2dataset_module('downloader')\n"
        "import img2dataset, wandb\n"
        "import img2dataset.downloader as again\n"
        "print(json.dumps({'download': callable(img2dataset.download), 'same': again is d,"
        " 'wandb': hasattr(wandb, 'init')}))\n"
    )
    assert got == {"download": True, "same": True, "wandb": True}


EMBED = (
    "import io, json, sys\n"
    "from PIL import Image\n"
    "import numpy as np\n"
    "from filters.clip_score import ClipModelSpec, load_clip\n"
    "{before}"
    f"spec = ClipModelSpec({str(DEMO_CLIP / 'DemoCLIP-Tiny.json')!r}, checkpoint={str(DEMO_CLIP / 'demo_clip.pt')!r})\n"
    "model, pre, tok = load_clip(spec)\n"
    "import torch\n"
    "img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (90, 130, 3), dtype=np.uint8))\n"
    "with torch.inference_mode():\n"
    "    e = model.encode_image(pre(img)[None]).flatten().tolist() + model.encode_text(tok(['a red dog'])).flatten().tolist()\n"
    "print(json.dumps({'e': e, 'loaded': sorted(m for m in ('transformers', 'timm', 'torch._dynamo', 'torchvision') if m in sys.modules)}))\n"
)


def test_open_clip_for_the_demo_model_leaves_out_the_towers_it_does_not_use_and_computes_the_same():
    lean = _python(EMBED.replace("{before}", ""))
    full = _python(EMBED.replace("{before}", "import open_clip, torchvision\n"))  # open_clip's whole import first
    assert lean["loaded"] == []  # no transformers, timm, torchvision package (and so no torch._dynamo)
    assert {"transformers", "torchvision"} <= set(full["loaded"])
    assert len(lean["e"]) == len(full["e"]) > 0
    assert lean["e"] == full["e"]


def test_a_model_with_a_tower_left_out_gets_it_back():
    got = _python(
        "import json, sys\n"
        "from filters.clip_score import import_open_clip\n"
        f"oc = import_open_clip({str(DEMO_CLIP / 'DemoCLIP-Tiny.json')!r})\n"
        "before = oc.model.HFTextEncoder.__module__, getattr(sys.modules['open_clip.hf_model'], 'transformers', None) is None\n"
        "oc = import_open_clip('roberta-ViT-B-32')\n"  # a shipped config with a Hugging Face text tower
        "after = getattr(sys.modules['open_clip.hf_model'], 'transformers', None) is not None\n"
        "import torchvision\n"
        "print(json.dumps({'before': before[1], 'after': after, 'same': oc.model.HFTextEncoder is sys.modules['open_clip.hf_model'].HFTextEncoder,"
        " 'tv': hasattr(torchvision, 'ops') and hasattr(torchvision.transforms, 'Resize')}))\n"
    )
    assert got == {"before": True, "after": True, "same": True, "tv": True}


def test_the_curate_command_runs_atexit_handlers_and_flushes_before_its_quick_exit(tmp_path):
    marker = tmp_path / "atexit"
    out = subprocess.run(
        [sys.executable, "-c",
         "import atexit, sys\n"
         f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
         "from curation.cli import exit_now\n"
         "sys.stdout.write('unflushed')\n"
         "exit_now(3)\n"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and out.stdout == "unflushed" and marker.read_text() == "ran"
