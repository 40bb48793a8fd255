"""CLIP score with open_clip: measure `clip_score`, drop pairs below a threshold.

`clip_score` is the cosine similarity of the L2-normalised image embedding and
the L2-normalised embedding of the record's first caption (DataComp's
definition). A record with no caption gets null and is not dropped here.

Two stages keep an accelerator fed:

* `ClipPreprocess` (CPU task): decodes the image under a pixel limit, runs
  open_clip's own eval transform up to the tensor conversion (resize, crop,
  RGB), and tokenizes the caption. It ships uint8 pixels (4x smaller than
  float32) and drops nothing but undecodable images.
* `ClipScore` (actor pool, GPU when the cluster has one): loads the model once
  per actor, finishes the transform (scale to [0, 1], normalise) on the device
  and scores the batch. It consumes the working columns.

So scores equal a direct `model.encode_image(preprocess(img))` /
`model.encode_text(tokenizer([caption]))` computation with the same model.

On a GPU the scoring stage runs under bf16 autocast (fp16 where the GPU has
no bf16), in batches of 256 by default, copying pixels from one pinned host
buffer with non-blocking transfers; on CPUs it runs fp32, in batches of 64,
with as many torch threads as CPUs it holds. `fast_decode` (off by default,
since it changes pixels) lets a JPEG decode at a reduced scale (libjpeg's
DCT scaling, PIL's `draft`) that is still at least the model's input size.

The model is an open_clip model name (or the path of an open_clip model-config
JSON, for models of your own) plus either a pretrained tag (e.g. `ViT-B-32` +
`laion2b_s34b_b79k`) or a local checkpoint file. A tag's weights must already
be on this machine (the Hugging Face cache, or open_clip's own cache for a URL
download): they are looked up without any network access, and loaded with the
hub offline, so a missing file is one line on the driver before any actor
starts, never a download attempt in every actor.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from curation.crawl.download import DEFAULT_MAX_PIXELS
from curation.errors import InputError
from curation.runtime import Resources
from filters.base import Drop, Filter

__all__ = [
    "ClipModelSpec",
    "ClipPreprocess",
    "ClipScore",
    "resolve_model_name",
    "default_batch_size",
    "autocast_dtype",
    "draft_request",
    "resolve_preprocess_cfg",
    "load_clip",
    "pretrained_weights",
    "DEFAULT_MAX_PIXELS",
]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ClipModelSpec:
    """Which CLIP model: open_clip name or model-config JSON, plus tag or checkpoint."""

    model: str
    pretrained: str | None = None
    checkpoint: str | None = None

    def check(self) -> None:
        """Fail early, on the driver, with a one-line reason.

        A model name plus checkpoint is checked without importing torch (the
        name against open_clip's model configs, the file for a container
        format torch or safetensors reads): the driver of a large job need not
        carry torch, and the shard tasks that load the model import it anyway.
        A file that passes here and still cannot be loaded fails where it is
        loaded, as the same one-line error. A pretrained tag is looked up in
        open_clip's registry (which imports torch) and its weights on disk.
        """
        if self.pretrained and self.checkpoint:
            raise InputError("give either --clip-pretrained or --clip-checkpoint, not both")
        if not self.pretrained:
            if not model_config_known(self.model):
                raise InputError(f"unknown open_clip model {self.model!r} (see open_clip.list_models())")
            if self.checkpoint:
                path = Path(self.checkpoint)
                if not path.is_file():
                    raise InputError(f"{self.checkpoint}: CLIP checkpoint not found")
                _check_container(path)
            return
        name = resolve_model_name(self.model)
        open_clip = import_open_clip(self.model)

        if open_clip.get_model_config(name) is None:
            raise InputError(f"unknown open_clip model {self.model!r} (see open_clip.list_models())")
        if not open_clip.get_pretrained_cfg(name, self.pretrained):
            tags = ", ".join(t for m, t in open_clip.list_pretrained() if m == name) or "none"
            raise InputError(f"no pretrained tag {self.pretrained!r} for {name} (known: {tags})")
        pretrained_weights(name, self.pretrained)


def _model_config_json(model: str) -> dict:
    """A model-config JSON file, read and checked (open_clip keeps a malformed one in its registry)."""
    path = Path(model)
    if not path.is_file():
        raise InputError(f"{model}: open_clip model config not found")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{model}: not a JSON open_clip model config: {exc}") from None
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise InputError(f"{model}: an open_clip model config needs embed_dim, vision_cfg and text_cfg")
    return cfg


def model_config_known(model: str) -> bool:
    """Whether open_clip knows `model` (a name among its shipped model configs, or a valid config
    JSON), found without importing open_clip (and so torch). InputError for a bad JSON file."""
    return _shipped_config(model) is not None


# open_clip's optional towers: the packages it imports when present, and the config keys that need them
_OPTIONAL_TOWERS = {"transformers": (("text_cfg", "hf_model_name"), ("text_cfg", "hf_tokenizer_name")),
                    "timm": (("vision_cfg", "timm_model_name"),)}
_TOWER_MODULES = {"transformers": ("hf_model", "HFTextEncoder"), "timm": ("timm_model", "TimmModel")}
_hidden_towers: set[str] = set()


def _shipped_config(model: str) -> dict | None:
    """The model config of `model` (a config JSON or a name among open_clip's shipped configs), read
    without importing open_clip; None when it is neither."""
    import importlib.util

    if model.endswith(".json"):
        return _model_config_json(model)
    spec = importlib.util.find_spec("open_clip")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model_configs" / f"{model}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def import_open_clip(model: str | None = None):
    """open_clip, imported for `model` without what that model does not use.

    A plain `import open_clip` imports every optional tower it knows (Hugging
    Face transformers, timm, and through them torch._dynamo) and torchvision's
    whole package (its models and ops, torch._dynamo again): about 6 CPU s
    before the first image, in every process that scores. For a model whose
    config names no HF text tower and no timm vision tower, open_clip is
    imported with those two packages absent (it treats them as optional) and
    with torchvision's modules that it uses (transforms, ops.misc) loaded
    without the package `__init__`; the modules are open_clip's and
    torchvision's own, unchanged. A later `import torchvision` or
    `transformers` still gets the whole package; a later model that needs a
    tower left out has its open_clip module imported again with it.
    """
    from curation.runtime import IMPORT_LOCK

    cfg = _shipped_config(model) if model else None
    with IMPORT_LOCK:
        return _import_open_clip(cfg)


def _import_open_clip(cfg: dict | None):
    import importlib
    import importlib.util
    import sys
    import types

    if "open_clip" in sys.modules:
        clip = sys.modules["open_clip"]
        for name in sorted(_hidden_towers):
            if cfg is not None and _needs_tower(cfg, name):
                module_name, cls = _TOWER_MODULES[name]
                tower = importlib.reload(importlib.import_module(f"open_clip.{module_name}"))
                setattr(importlib.import_module("open_clip.model"), cls, getattr(tower, cls))
                _hidden_towers.discard(name)
        return clip
    if cfg is None:
        return importlib.import_module("open_clip")
    hide = [n for n in _OPTIONAL_TOWERS if n not in sys.modules and not _needs_tower(cfg, n)]
    stubs = []
    for name in ("torchvision", "torchvision.ops") if "torchvision" not in sys.modules else ():
        spec = importlib.util.find_spec(name)
        if spec is None:
            break
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations or [])
        package.__spec__ = spec
        sys.modules[name] = package
        stubs.append(name)
    for name in hide:
        sys.modules[name] = None  # an ImportError for open_clip's optional imports
    try:
        clip = importlib.import_module("open_clip")
        _hidden_towers.update(hide)
        return clip
    finally:
        for name in (*hide, *stubs):
            sys.modules.pop(name, None)


def _needs_tower(cfg: dict, package: str) -> bool:
    return any((cfg.get(part) or {}).get(key) for part, key in _OPTIONAL_TOWERS[package])


def _check_container(path: Path) -> None:
    """The checkpoint is a file torch.load or safetensors can open (zip archive, pickle, safetensors
    header), checked from its first bytes, without torch; the full load happens where the model runs."""
    import struct
    import zipfile

    with open(path, "rb") as f:
        head = f.read(16)
        if path.suffix == ".safetensors":
            size = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
            f.seek(8)
            try:
                json.loads(f.read(size) if 0 < size < 100 << 20 else b"")
                return
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise InputError(f"{path}: cannot load CLIP weights: not a safetensors file") from None
    if zipfile.is_zipfile(path):  # torch.save's format since 1.6
        with zipfile.ZipFile(path) as z:
            if any(n.endswith("data.pkl") for n in z.namelist()):
                return
        raise InputError(f"{path}: cannot load CLIP weights: a zip archive without torch's data.pkl")
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # a legacy torch.save pickle
        return
    raise InputError(f"{path}: cannot load CLIP weights: neither a torch checkpoint nor safetensors (starts {head[:8]!r})")


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, from the environment as huggingface_hub resolves it."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(hub)))


def _hf_candidates(filename: str) -> list[str]:
    """The files open_clip tries for a hub checkpoint, in its order: a safetensors alternative first."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    names = []
    if filename == HF_WEIGHTS_NAME:
        names.append(HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return names + [filename]


def pretrained_weights(name: str, tag: str) -> tuple[Path, Path]:
    """(cache folder, local weights file) of an open_clip pretrained tag, found without network access.

    Reads open_clip's registry for where the tag's weights come from: a Hugging
    Face hub repository (looked up in the local hub cache, as open_clip would
    find it) or a URL (open_clip downloads those to ~/.cache/clip). InputError
    in one line, naming the missing file and where to put it, when it is not
    on disk.
    """
    open_clip = import_open_clip(name)
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import has_hf_hub

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("file"):
        path = Path(cfg["file"])
        if not path.is_file():
            raise InputError(f"{name}/{tag}: weights file {path} not found")
        return path.parent, path
    hub = cfg.get("hf_hub", "")
    if hub and has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)  # 'org/name/' means open_clip's default file name
        filename = filename or HF_WEIGHTS_NAME
        cache = _hf_hub_cache()
        candidates = _hf_candidates(filename)
        for candidate in candidates:
            found = try_to_load_from_cache(repo, candidate, cache_dir=cache)
            if isinstance(found, str) and os.path.isfile(found):
                return cache, Path(found)
        raise InputError(
            f"{name}/{tag}: pretrained weights not on this machine: no {' or '.join(candidates)} of the Hugging Face "
            f"repository {repo} in the hub cache {cache}; put it there (`hf download {repo} {filename} --cache-dir {cache}` "
            "where there is network access), or pass --clip-checkpoint PATH to a local file"
        )
    url = cfg.get("url", "")
    if url:
        cache = Path(os.path.expanduser("~/.cache/clip"))
        path = cache / os.path.basename(url)
        if path.is_file():
            return cache, path
        raise InputError(
            f"{name}/{tag}: pretrained weights not on this machine: {path} is missing; download {url} to that path, "
            "or pass --clip-checkpoint PATH to a local file"
        )
    raise InputError(f"{name}/{tag}: open_clip's registry gives no source for these weights; pass --clip-checkpoint PATH")


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hugging Face hub offline for the scope: the environment variable and huggingface_hub's
    copy of it (read when it was imported); both restored afterwards."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:
        hf_constants = None
    constant = getattr(hf_constants, "HF_HUB_OFFLINE", None)
    if hf_constants is not None:
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = constant
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def resolve_model_name(model: str) -> str:
    """An open_clip model name; a path to a model-config JSON is registered first."""
    open_clip = import_open_clip(model)

    if model.endswith(".json"):
        path = Path(model)
        _model_config_json(model)  # checked here first: open_clip would keep a malformed file in its registry
        open_clip.add_model_config(path)
        return path.stem
    return model


def resolve_preprocess_cfg(spec: ClipModelSpec) -> dict[str, Any]:
    """The eval preprocessing open_clip would build for this model, without loading weights."""
    open_clip = import_open_clip(spec.model)
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    name = resolve_model_name(spec.model)
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise InputError(f"unknown open_clip model {spec.model!r}")
    cfg = asdict(PreprocessCfg())
    cfg = merge_preprocess_dict(cfg, model_cfg.get("preprocess_cfg", {}))
    if spec.pretrained and not spec.checkpoint:
        cfg = merge_preprocess_dict(cfg, open_clip.get_pretrained_cfg(name, spec.pretrained) or {})
    size = model_cfg.get("vision_cfg", {}).get("image_size")
    if size is not None:  # the model's visual.image_size: always a pair
        cfg["size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return cfg


def load_clip(spec: ClipModelSpec, device: str = "cpu"):
    """(model, eval preprocess, tokenizer) through open_clip's ordinary loading path."""
    open_clip = import_open_clip(spec.model)

    name = resolve_model_name(spec.model)
    pretrained = spec.checkpoint or spec.pretrained
    kwargs: dict[str, Any] = {}
    if spec.pretrained and not spec.checkpoint:
        cache, _ = pretrained_weights(name, spec.pretrained)  # on disk, or an InputError: never a download
        kwargs["cache_dir"] = str(cache) if open_clip.get_pretrained_cfg(name, spec.pretrained).get("hf_hub") else None
    try:
        with _hub_offline():
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle a checkpoint is the file's fault
        if isinstance(exc, InputError):
            raise
        where = spec.checkpoint or f"{name}/{spec.pretrained}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InputError(f"{where}: cannot load CLIP weights: {first}") from exc
    model.eval()
    return model, preprocess, clip_tokenizer(name)


@functools.lru_cache(maxsize=4)
def clip_tokenizer(name: str):
    """open_clip's tokenizer of model `name`, made once per process (its BPE tables take 0.15 s to build)."""
    return import_open_clip(name).get_tokenizer(name)


CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 256


def default_batch_size(gpus: float) -> int:
    """Images per scoring batch when none is given: hundreds on a GPU, 64 on CPUs."""
    return GPU_BATCH_SIZE if gpus and gpus > 0 else CPU_BATCH_SIZE


def autocast_dtype(device: str, bf16_supported: bool) -> str | None:
    """The autocast dtype for scoring on `device`: bf16 where the GPU has it, else fp16; none on CPUs (fp32)."""
    if device != "cuda":
        return None
    return "bfloat16" if bf16_supported else "float16"


def draft_request(width: int, height: int, size: Sequence[int]) -> tuple[int, int]:
    """The size to ask PIL's JPEG `draft` for so the decoded image is still at least `size` on its
    shorter side (and on both sides for a squash resize): the largest DCT scaling that keeps the
    eval transform's resize a downscale. Returns the full size when no scaling is possible."""
    target = max(int(x) for x in size)
    short = min(width, height)
    if short <= target:
        return width, height
    scale = target / short
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _plain(v):
    return tuple(v) if isinstance(v, list) else v


def _split_transform(transform) -> tuple[list, Any]:
    """open_clip's eval Compose → (PIL steps before the tensor conversion, Normalize)."""
    import importlib
    import sys

    # the module open_clip's transforms come from (loaded by `import_open_clip`, perhaps without torchvision's
    # package __init__): asked of sys.modules first, so that the whole package is not imported for it
    T = sys.modules.get("torchvision.transforms") or importlib.import_module("torchvision.transforms")

    steps = list(getattr(transform, "transforms", [transform]))
    idx = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if idx is None or not isinstance(steps[-1], T.Normalize) or idx != len(steps) - 2:
        raise ValueError(f"unexpected open_clip transform layout: {transform}")
    return steps[:idx], steps[-1]


class ClipPreprocess(Filter):
    """CPU stage: decode, resize/crop as open_clip does, tokenize the first caption."""

    name = "clip"
    resources = Resources(cpus=1)
    batch_size = 64
    measures = (
        pa.field("clip_pixels", pa.binary()),
        pa.field("clip_shape", pa.list_(pa.int32())),
        pa.field("clip_tokens", pa.list_(pa.int32())),
    )

    def __init__(self, spec: ClipModelSpec, max_pixels: int = DEFAULT_MAX_PIXELS, fast_decode: bool = False):
        self.spec = spec
        self.max_pixels = max_pixels
        self.fast_decode = bool(fast_decode)
        self._pil_steps = None
        self._tokenizer = None
        self._cfg = None

    def _ready(self) -> None:
        if self._pil_steps is not None:
            return
        import_open_clip(self.spec.model)
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self._cfg = resolve_preprocess_cfg(self.spec)
        transform = image_transform_v2(PreprocessCfg(**self._cfg), is_train=False)
        self._pil_steps, _ = _split_transform(transform)
        self._tokenizer = clip_tokenizer(resolve_model_name(self.spec.model))

    def measure(self, batch: pa.Table) -> dict[str, pa.Array]:
        from PIL import Image

        self._ready()
        images = batch.column("image").to_pylist()
        captions = batch.column("captions").to_pylist() if "captions" in batch.column_names else [None] * len(images)
        pixels: list[bytes | None] = []
        shapes: list[list[int] | None] = []
        errors: list[str | None] = []
        for data in images:
            try:
                if data is None:
                    raise ValueError("no image bytes")
                # the pixel limit is checked here, from the header, before any decoding
                with Image.open(io.BytesIO(data)) as im:
                    if im.width * im.height > self.max_pixels:
                        raise ValueError(f"{im.width}x{im.height} exceeds {self.max_pixels} pixels")
                    if self.fast_decode and im.format == "JPEG":
                        im.draft("RGB", draft_request(im.width, im.height, self._cfg["size"]))
                    im.load()
                    out = im
                    for step in self._pil_steps:
                        out = step(out)
                    arr = np.asarray(out.convert("RGB") if out.mode != "RGB" else out, dtype=np.uint8)
                pixels.append(arr.tobytes())
                shapes.append(list(arr.shape))
                errors.append(None)
            except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
                pixels.append(None)
                shapes.append(None)
                errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        texts = [c[0] if c else None for c in captions]
        present = [t for t in texts if t is not None]
        tokens_present = self._tokenizer(present).tolist() if present else []
        it = iter(tokens_present)
        tokens = [next(it) if t is not None else None for t in texts]
        self._errors = errors
        return {
            "clip_pixels": pa.array(pixels, pa.binary()),
            "clip_shape": pa.array(shapes, pa.list_(pa.int32())),
            "clip_tokens": pa.array(tokens, pa.list_(pa.int32())),
        }

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        return [Drop("image_decode_error", e) if e else None for e in self._errors]


class ClipScore(Filter):
    """Model stage: score preprocessed batches; drop below `min_score`."""

    name = "clip"
    batch_size = 64
    # one model per actor, fed by every shard task: on GPUs always; on CPUs only when asked
    # (there the model runs inside each shard task, which saves a blocking round trip and a CPU)
    pooled = True
    measures = (pa.field("clip_score", pa.float32()),)
    consumes = ("clip_pixels", "clip_shape", "clip_tokens")

    def __init__(
        self, spec: ClipModelSpec, min_score: float | None, gpus: float = 0.0, batch_size: int | None = None,
        pooled: bool | None = None, keep_embeddings: bool = False,
    ):
        self.pooled = gpus > 0 if pooled is None else bool(pooled)
        # also measure `clip_embedding`: the L2-normalised image embedding (semantic dedup, filters/semdedup.py)
        self.keep_embeddings = keep_embeddings
        if keep_embeddings:
            self.measures = (*type(self).measures, pa.field("clip_embedding", pa.list_(pa.float32())))
        self.spec = spec
        self.min_score = min_score
        self.resources = Resources(cpus=1, gpus=gpus)
        self.batch_size = batch_size or default_batch_size(gpus)
        self.model = None

    def setup(self) -> None:
        import torch

        self.device = "cuda" if self.resources.gpus and torch.cuda.is_available() else "cpu"
        bf16 = self.device == "cuda" and torch.cuda.is_bf16_supported()
        dtype = autocast_dtype(self.device, bf16)
        self.autocast = getattr(torch, dtype) if dtype else None
        self._host = None  # pinned uint8 pixel buffer, reused batch after batch (CUDA only)
        # CPU threads: the CPUs this worker holds (CURATE_TORCH_THREADS overrides),
        # set around each batch and restored, never for the whole process
        self.threads = max(1, int(os.environ.get("CURATE_TORCH_THREADS", "0")) or math.ceil(self.resources.cpus))
        self.model, preprocess, _ = load_clip(self.spec, self.device)
        _, normalize = _split_transform(preprocess)
        self.mean = torch.tensor(normalize.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(normalize.std, device=self.device).view(1, 3, 1, 1)
        cfg = getattr(self.model.visual, "preprocess_cfg", None)
        expected = resolve_preprocess_cfg(self.spec)
        keys = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")
        if cfg is not None and {k: _plain(cfg.get(k)) for k in keys} != {k: _plain(expected.get(k)) for k in keys}:
            raise ValueError(f"preprocess mismatch for {self.spec.model}: model {cfg} vs resolved {expected}")

    def measure(self, batch: pa.Table) -> dict[str, pa.Array]:
        import torch

        if self.model is None:
            self.setup()
        pixels = batch.column("clip_pixels").to_pylist()
        shapes = batch.column("clip_shape").to_pylist()
        tokens = batch.column("clip_tokens").to_pylist()
        rows = [i for i, (p, t) in enumerate(zip(pixels, tokens)) if p is not None and t is not None]
        scores: list[float | None] = [None] * batch.num_rows
        threads_before = torch.get_num_threads()
        if rows and self.device == "cpu":
            torch.set_num_threads(self.threads)
        try:
            sims = self._similarities(pixels, shapes, tokens, rows) if rows else []
        finally:
            torch.set_num_threads(threads_before)
        for i, s in zip(rows, sims):
            scores[i] = float(s)
        self._scores = scores
        if self.keep_embeddings:
            embeddings: list = [None] * batch.num_rows
            for i, e in zip(rows, self._image_embeddings if rows else []):
                embeddings[i] = e
            return {"clip_score": pa.array(scores, pa.float32()), "clip_embedding": pa.array(embeddings, pa.list_(pa.float32()))}
        return {"clip_score": pa.array(scores, pa.float32())}

    def _pixels(self, pixels, shapes, rows):
        """The rows' uint8 pixels as one NHWC tensor on the device, filled into one host buffer reused
        batch after batch (pinned on CUDA, so the copy to the GPU is a non-blocking DMA)."""
        import torch

        shape = tuple(shapes[rows[0]])
        if any(tuple(shapes[i]) != shape for i in rows):  # never from ClipPreprocess (one crop size): stack
            imgs = np.stack([np.frombuffer(pixels[i], np.uint8).reshape(shapes[i]) for i in rows])
            return torch.from_numpy(imgs).to(self.device)
        n = len(rows)
        if self._host is None or tuple(self._host.shape[1:]) != shape or self._host.shape[0] < n:
            host = torch.empty((max(n, self.batch_size), *shape), dtype=torch.uint8)
            self._host = host.pin_memory() if self.device == "cuda" else host
        buf = self._host.numpy()
        for j, i in enumerate(rows):
            buf[j] = np.frombuffer(pixels[i], np.uint8).reshape(shape)
        # non-blocking: the scores' .cpu() at the end of the batch waits for the stream, so the copy
        # has left the buffer before the next batch refills it (on CPUs the next step copies it anyway)
        return self._host[:n].to(self.device, non_blocking=True)

    def _similarities(self, pixels, shapes, tokens, rows) -> np.ndarray:
        import torch

        x = self._pixels(pixels, shapes, rows).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self.mean) / self.std
        text = torch.tensor([tokens[i] for i in rows], dtype=torch.long).to(self.device, non_blocking=True)
        autocast = (torch.autocast(device_type="cuda", dtype=self.autocast) if self.autocast is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            img_emb = self.model.encode_image(x, normalize=True)
            txt_emb = self.model.encode_text(text, normalize=True)
            if self.keep_embeddings:
                self._image_embeddings = img_emb.float().cpu().numpy()
            return (img_emb.float() * txt_emb.float()).sum(dim=-1).cpu().numpy()

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        if self.min_score is None:
            return [None] * batch.num_rows
        thr = self.min_score
        return [
            Drop("clip_score_below_threshold", f"{s:.4f} < {thr:g}") if s is not None and s < thr else None
            for s in self._scores
        ]


def from_config(cfg) -> list[Filter]:
    """The stages of the CLIP filter for a job config; none without `clip_model`.

    The model is checked here, on the driver, before any actor starts. GPUs
    per actor: `clip_gpus`, else 1 when the cluster has GPUs. Actors: with
    GPUs, or when `clip_actors` asks for them on CPUs.
    """
    if not cfg.clip_model:
        return []
    from curation.runner import cluster_gpus

    spec = ClipModelSpec(cfg.clip_model, cfg.clip_pretrained, cfg.clip_checkpoint)
    spec.check()
    gpus = cfg.clip_gpus if cfg.clip_gpus is not None else (1.0 if cluster_gpus(getattr(cfg, "ray_address", None)) else 0.0)
    batch = cfg.clip_batch_size or default_batch_size(gpus)
    pre = ClipPreprocess(spec, max_pixels=cfg.max_pixels, fast_decode=getattr(cfg, "clip_fast_decode", False))
    pre.batch_size = batch
    pooled = getattr(cfg, "clip_actors", None)
    keep = bool(getattr(cfg, "keep_embeddings", False) or getattr(cfg, "semdedup", False)
                or "semantic" in (getattr(cfg, "dedup", None) or ()))
    return [pre, ClipScore(spec, cfg.min_clip_score, gpus=gpus, batch_size=batch, pooled=pooled, keep_embeddings=keep)]
