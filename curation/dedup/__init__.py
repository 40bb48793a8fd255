"""Dedup at corpus scale: keys, connected components and leader decisions, every step a shuffle on the cluster.

The flow (`jobs/dedup.py:group_duplicates` runs it through `curation.runner.shuffle`):

    records ──keys.key_rows──▶ (key, node) rows ──keys.bucket_edges──▶ edges
      exact keys: 128-bit hashes of the sha256 and of the normalised URL
      pHash: multi-index tables (Manku et al.): m blocks, a key per (m - k)-subset
    edges ──components.large_star / small_star, until settled──▶ a star per component
    stars ──components.label_rows──▶ (node, root), cut by the input's row ranges
    records + labels ──leaders.member_rows──▶ component members ──leaders.decide_members──▶ decisions
    decisions ──leaders.write_decisions──▶ one Parquet file per row range (read by filters.dedup_exact.DedupDecide)

A record's `node` is its place in the input (file index, row; `curation.runner.node_id`).
Components may be coarser than the graph's (a hot bucket is joined whole,
unchecked): the decisions check every pair they use, and the leader rule
never crosses a true component, so a coarser grouping decides the same.
The driver holds counts; no step gathers pairs or a column of the corpus.
"""
