"""Storage: every path or URL of an input or a dataset goes through here.

- `fs`: a path or URL (local, `s3://`, `gs://`, `hf://`, `https://`, any fsspec protocol) to a filesystem
  and a path on it; inputs as users give them (a file, a folder, a glob, several) expanded to files.
- `dataset`: the dataset layout, manifest, lock, staging and the swap; the read side that trusts only the manifest.
"""
