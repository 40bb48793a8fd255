"""Images as the models take them: tensors from encoded bytes (spec section 2).

- Qwen-VL: 448x448, bicubic, aspect ratio not kept, CLIP mean/std
  (`qwen_vl_pixels`), as the Qwen-VL visual receptor's transform does.
- Qwen2-VL / Qwen2.5-VL: smart_resize to (H', W') at the limits the samples
  were built with, bicubic with antialias on the 8-bit image, rescale to
  [0, 1], CLIP mean/std, then cut into 14x14 patches, each repeated over the
  2 temporal frames and grouped 2x2 for the merger (`qwen2_vl_patches`):
  `pixel_values` of shape (grid_h * grid_w, 3 * 2 * 14 * 14) and `grid_thw`
  (1, H'/14, W'/14), the layout of transformers' `Qwen2VLImageProcessor`
  (tests compare the two within 1e-5).

(H', W') comes from `formats.coords.smart_resize` (qwen-vl-utils' rule), the
same one that counted the `<|image_pad|>` tokens of the samples, so that an
image always has as many merged patches as the text has pads.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from formats.coords import smart_resize

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "QWEN_VL_SIZE",
    "PATCH_SIZE",
    "MERGE_SIZE",
    "TEMPORAL_PATCH_SIZE",
    "decode_rgb",
    "qwen_vl_pixels",
    "qwen2_vl_patches",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
QWEN_VL_SIZE = 448
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2


def decode_rgb(data: bytes):
    """Encoded image bytes -> an RGB PIL image (decoded fully, so errors surface here)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.convert("RGB") if im.mode != "RGB" else im.copy()


def _normalize(chw: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 255] float CHW -> (x / 255 - mean) / std, float32."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1) * 255.0
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1) * 255.0
    return (chw.to(torch.float32) - mean) / std


def qwen_vl_pixels(data: bytes, size: int = QWEN_VL_SIZE) -> torch.Tensor:
    """Qwen-VL: (3, size, size) float32, bicubic resize (aspect not kept), CLIP-normalised."""
    from PIL import Image

    im = decode_rgb(data).resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    return _normalize(arr)


def qwen2_vl_patches(
    data: bytes,
    min_pixels: int,
    max_pixels: int,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL / 2.5-VL: (pixel_values (N, 3*T*P*P), grid_thw (3,)) of one image."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvf

    im = decode_rgb(data)
    factor = patch_size * merge_size
    h, w = smart_resize(im.height, im.width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    chw = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    if (h, w) != (im.height, im.width):
        chw = tvf.resize(chw, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = _normalize(chw)  # (3, h, w)
    gh, gw = h // patch_size, w // patch_size
    m = merge_size
    # (C, gh/m, m, P, gw/m, m, P) -> (gh/m, gw/m, m, m, C, P, P): merge groups of 2x2 patches stay adjacent
    x = x.reshape(3, gh // m, m, patch_size, gw // m, m, patch_size).permute(1, 4, 2, 5, 0, 3, 6)
    # each patch repeated over the temporal frames: (..., C, T, P, P)
    x = x.unsqueeze(5).expand(*x.shape[:5], temporal_patch_size, patch_size, patch_size)
    patches = x.reshape(gh * gw, 3 * temporal_patch_size * patch_size * patch_size)
    return patches.contiguous(), torch.tensor([1, gh, gw], dtype=torch.long)
