"""The crawl: URL lists in, records out, fetched as a trustworthy crawler fetches.

- `urls`: URL lists as users have them (files, folders, globs, at any fsspec URL), planned into input shards
  from file metadata, each shard's slice read by its own task; duplicate URLs found by a shuffle on the cluster.
- `download`: img2dataset's real engine inside each shard's task, and its rows as records or rejects.
- `fetch`: how that engine opens URLs (address policy at connection time, identity, politeness, bounded bodies).
- `netpolicy`: the pure rules the others apply (addresses, URL normalisation, retries, host order).
"""
