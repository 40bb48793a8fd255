"""formats: records -> samples in a token format (Qwen-VL, Qwen2-VL, Qwen2.5-VL).

Modules: `tokenizer` (exact ids, image spans), `coords` (0-999 grid, clipping,
smart_resize), `tasks` (every task as pure functions), `sft` (label mask),
`build` (the BuildSamples stage), `packing`, `grammar` (validation), `export`,
and the training side: `reader` (a PyTorch IterableDataset over a dataset
directory) with `images` (pixel tensors as the models take them).
Submodules are imported on use, so `import formats` stays light.
"""

__all__ = [
    "build",
    "coords",
    "export",
    "grammar",
    "images",
    "packing",
    "reader",
    "sft",
    "tasks",
    "tokenizer",
]
