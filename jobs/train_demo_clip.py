"""Train the tiny demo CLIP model on the synthetic demo corpus (CPU, minutes).

    .venv/bin/python -m jobs.train_demo_clip --out jobs/assets/demo-clip/demo_clip.pt --seed 0

The model (``jobs/assets/demo-clip/DemoCLIP-Tiny.json``) is a small open_clip
ViT with open_clip's default tokenizer. It is trained contrastively on fresh
pairs from ``curation.democorpus.sample_pair``; for every image the caption
batch also holds "near miss" captions made from its own caption (colours
swapped between shapes, one colour or shape changed, a shape dropped or added,
the background changed), so the model has to bind colours to shapes. A second,
sigmoid loss on the same scores puts matching and non-matching pairs on either
side of one fixed cosine threshold, which is what a CLIP-score filter needs.

The saved checkpoint is a plain fp16 ``state_dict`` that open_clip loads with

    open_clip.add_model_config(".../DemoCLIP-Tiny.json")
    open_clip.create_model_and_transforms("DemoCLIP-Tiny", pretrained=".../demo_clip.pt")

After training the job scores a fresh demo corpus (another seed), prints the
score distributions of true and swapped captions and the threshold midway
between them, and records them in ``demo_clip.eval.json`` beside the
checkpoint (``--eval-only`` redoes just this step).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from curation.democorpus import BACKGROUNDS, COLORS, SHAPES, generate_corpus, sample_pair

__all__ = [
    "MODEL_NAME",
    "ASSET_DIR",
    "CONFIG_PATH",
    "CHECKPOINT_PATH",
    "TrainConfig",
    "load_demo_clip",
    "near_miss_captions",
    "clip_scores",
    "score_corpus",
    "separation_report",
    "train",
    "main",
]

log = logging.getLogger(__name__)

MODEL_NAME = "DemoCLIP-Tiny"
ASSET_DIR = Path(__file__).resolve().parent / "assets" / "demo-clip"
CONFIG_PATH = ASSET_DIR / f"{MODEL_NAME}.json"
CHECKPOINT_PATH = ASSET_DIR / "demo_clip.pt"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    steps: int = 360  # about 5 minutes on 2 free cores
    minutes: float = 8.5  # wall-clock cap for the optimisation loop (the schedule then ends early)
    batch_size: int = 128
    pool_size: int = 3072  # preprocessed pairs kept in memory
    fresh_per_step: int = 32  # pool entries replaced by fresh pairs each step
    negatives_per_image: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 40
    threads: int = 2
    eval_seed: int = 1
    eval_n: int = 240


# ---------------------------------------------------------------- model I/O


def load_demo_clip(checkpoint: str | os.PathLike | None = CHECKPOINT_PATH, device: str = "cpu"):
    """(model, preprocess, tokenizer) through open_clip's normal loading path."""
    import open_clip

    open_clip.add_model_config(CONFIG_PATH)
    pretrained = None if checkpoint is None else str(checkpoint)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=pretrained, device=device)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    return model, preprocess, tokenizer


# ---------------------------------------------------------------- near misses

_COLOR_ALT = "|".join(COLORS)
_SHAPE_ALT = "|".join(SHAPES)
_BG_ALT = "|".join(BACKGROUNDS.values())
_THING = rf"an? (?:{_COLOR_ALT}) (?:{_SHAPE_ALT})"
_LIST_RE = re.compile(rf"{_THING}(?:, {_THING})*(?: and {_THING})?")
_PAIR_RE = re.compile(rf"an? ({_COLOR_ALT}) ({_SHAPE_ALT})")
_BG_RE = re.compile(rf"\b({_BG_ALT}) background")


def _thing_list(pairs: list[tuple[str, str]]) -> str:
    parts = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in pairs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def near_miss_captions(caption: str, k: int, rng: np.random.Generator) -> list[str]:
    """``k`` captions that differ from ``caption`` in what they say about the image.

    Pure over its inputs: colours swapped between two shapes, one colour or
    shape replaced, a shape dropped or added, or the background changed.
    """
    m = _LIST_RE.search(caption)
    if m is None:
        raise ValueError(f"not a demo caption: {caption!r}")
    pairs = [(c, s) for c, s in _PAIR_RE.findall(m.group(0))]
    bg = _BG_RE.search(caption)
    out: list[str] = []
    colors, shapes = list(COLORS), list(SHAPES)
    while len(out) < k:
        new = list(pairs)
        op = int(rng.integers(0, 6))
        if op == 0 and len(new) >= 2:  # bind the colours to the wrong shapes
            i, j = (int(v) for v in rng.choice(len(new), 2, replace=False))
            (ci, si), (cj, sj) = new[i], new[j]
            new[i], new[j] = (cj, si), (ci, sj)
        elif op == 1 or (op == 0 and len(new) < 2):  # one colour changed
            i = int(rng.integers(0, len(new)))
            used = {c for c, _ in new}
            new[i] = (str(rng.choice([c for c in colors if c not in used])), new[i][1])
        elif op == 2:  # one shape changed
            i = int(rng.integers(0, len(new)))
            used = {s for _, s in new}
            new[i] = (new[i][0], str(rng.choice([s for s in shapes if s not in used])))
        elif op == 3 and len(new) >= 2:  # a shape dropped
            del new[int(rng.integers(0, len(new)))]
        elif op in (3, 4) and len(new) < 3:  # a shape added
            used_c, used_s = {c for c, _ in new}, {s for _, s in new}
            extra = (
                str(rng.choice([c for c in colors if c not in used_c])),
                str(rng.choice([s for s in shapes if s not in used_s])),
            )
            new.insert(int(rng.integers(0, len(new) + 1)), extra)
        elif bg is not None:  # background changed
            other = str(rng.choice([b for b in BACKGROUNDS.values() if b != bg.group(1)]))
            out.append(caption[: bg.start(1)] + other + caption[bg.end(1) :])
            continue
        else:
            continue
        if sorted(new) == sorted(pairs):
            continue
        out.append(caption[: m.start()] + _thing_list(new) + caption[m.end() :])
    return out


# ---------------------------------------------------------------- scoring


@torch.no_grad()
def clip_scores(model, preprocess, tokenizer, images, captions: list[str], batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of L2-normalised image and text embeddings, pairwise by index."""
    model.eval()
    scores = []
    for start in range(0, len(captions), batch_size):
        ims = torch.stack([preprocess(im) for im in images[start : start + batch_size]])
        txt = tokenizer(captions[start : start + batch_size])
        f = F.normalize(model.encode_image(ims).float(), dim=-1)
        g = F.normalize(model.encode_text(txt).float(), dim=-1)
        scores.append((f * g).sum(-1).numpy())
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def score_corpus(model, preprocess, tokenizer, out_dir, items) -> dict[str, np.ndarray]:
    """clip_score of each decodable, non-tiny item's ``caption``, split into swapped and the rest."""
    from PIL import Image

    images, captions, swapped = [], [], []
    for it in items:
        if it.planted in ("corrupt", "tiny"):
            continue
        with Image.open(os.path.join(out_dir, it.filename)) as im:
            images.append(im.convert("RGB"))
        captions.append(it.caption)
        swapped.append(it.planted == "swapped_caption")
    s = clip_scores(model, preprocess, tokenizer, images, captions)
    mask = np.array(swapped, dtype=bool)
    return {"swapped": s[mask], "true": s[~mask]}


def separation_report(scores: dict[str, np.ndarray]) -> dict:
    """Distributions, the threshold midway between the classes, and what it drops."""
    sw, tr = scores["swapped"], scores["true"]
    if not len(sw) or not len(tr):
        raise ValueError(f"need both classes, got {len(sw)} swapped and {len(tr)} true scores")
    # midpoints between neighbouring scores; fewest mistakes first, then the widest gap
    values = np.unique(np.concatenate([sw, tr]))
    best = None
    for lo, hi in zip(values[:-1], values[1:]):
        t = (lo + hi) / 2
        key = (int(np.sum(sw >= t) + np.sum(tr < t)), -(hi - lo))
        if best is None or key < best[0]:
            best = (key, float(t))
    threshold = best[1]
    dropped_sw = int(np.sum(sw < threshold))
    dropped_tr = int(np.sum(tr < threshold))

    def stats(a):
        return {"n": int(len(a)), "min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}

    return {
        "swapped": stats(sw),
        "true": stats(tr),
        "threshold": threshold,
        "margin": float(tr.min() - sw.max()),
        "swapped_dropped": dropped_sw,
        "true_dropped": dropped_tr,
        "recall": dropped_sw / max(1, len(sw)),
        "precision": dropped_sw / max(1, dropped_sw + dropped_tr),
    }


# ---------------------------------------------------------------- training


def _fresh(rng: np.random.Generator, preprocess, n: int) -> tuple[torch.Tensor, list[str]]:
    ims, caps = [], []
    for _ in range(n):
        im, cap = sample_pair(rng)
        ims.append(preprocess(im))
        caps.append(cap)
    return torch.stack(ims), caps


def train(cfg: TrainConfig, out: str | os.PathLike) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 1])
    model, preprocess, tokenizer = load_demo_clip(checkpoint=None)
    model.train()

    t0 = time.time()
    pool_x, pool_c = _fresh(rng, preprocess, cfg.pool_size)
    log.info("pool of %d pairs in %.1fs", cfg.pool_size, time.time() - t0)

    # a learnable bias for the sigmoid loss (training only; not saved)
    bias = torch.nn.Parameter(torch.tensor(-5.0))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay + [bias], "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    budget = cfg.minutes * 60.0
    t_start = time.time()
    step = 0
    k = cfg.negatives_per_image
    while step < cfg.steps:
        elapsed = time.time() - t_start
        if elapsed > budget:
            log.warning("wall-clock cap of %.1f min reached after %d steps", cfg.minutes, step)
            break
        frac = max(step / cfg.steps, elapsed / budget)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        for g in opt.param_groups:
            g["lr"] = lr

        # refresh part of the pool, then draw a batch
        new_x, new_c = _fresh(rng, preprocess, cfg.fresh_per_step)
        slots = rng.choice(cfg.pool_size, cfg.fresh_per_step, replace=False)
        for s, x, c in zip(slots, new_x, new_c):
            pool_x[s] = x
            pool_c[s] = c
        idx = rng.choice(cfg.pool_size, cfg.batch_size, replace=False)
        x = pool_x[torch.from_numpy(idx)]
        caps = [pool_c[i] for i in idx]
        negs = [n for c in caps for n in near_miss_captions(c, k, rng)]
        tokens = tokenizer(caps + negs)

        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        b = len(caps)
        pos, neg = txt[:b], txt[b:].view(b, k, -1)
        scale = model.logit_scale.exp().clamp(max=100)
        sim = img @ pos.T  # b x b
        sim_hard = torch.einsum("bd,bkd->bk", img, neg)  # b x k, each image's own near misses
        labels = torch.arange(b)
        logits_i2t = scale * torch.cat([sim, sim_hard], dim=1)
        loss_clip = (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(scale * sim.T, labels)) / 2
        # sigmoid loss: one fixed threshold between matching and non-matching pairs
        all_sim = torch.cat([sim, sim_hard], dim=1)
        target = torch.zeros_like(all_sim)
        target[labels, labels] = 1.0
        weight = torch.ones_like(all_sim)
        weight[:, b:] = 4.0  # near misses are the cases that matter
        loss_sig = F.binary_cross_entropy_with_logits(scale * all_sim + bias, target, weight=weight)
        loss = loss_clip + loss_sig

        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        if step % 25 == 0:
            with torch.no_grad():
                acc = (logits_i2t.argmax(1) == labels).float().mean().item()
                hard = (sim.diag()[:, None] > sim_hard).float().mean().item()
            log.info(
                "step %d  %.0fs  loss %.3f (clip %.3f sig %.3f)  acc %.2f  hard %.2f  scale %.1f  lr %.2e",
                step, time.time() - t_start, loss.item(), loss_clip.item(), loss_sig.item(),
                acc, hard, scale.item(), lr,
            )
    train_s = time.time() - t_start

    model.eval()
    state = {name: t.detach().half() if t.is_floating_point() else t for name, t in model.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)
    log.info("saved %s (%.2f MB) after %d steps, %.0fs", out, out.stat().st_size / 1e6, step, train_s)
    return {
        "steps": step,
        "train_seconds": round(train_s, 1),
        "checkpoint_bytes": out.stat().st_size,
        "threads": cfg.threads,
        "config": asdict(cfg),
    }


def evaluate(checkpoint: str | os.PathLike, seed: int = 1, n: int = 240) -> dict:
    """Score a fresh demo corpus with the saved checkpoint (loaded the normal way)."""
    model, preprocess, tokenizer = load_demo_clip(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        items = generate_corpus(tmp, n=n, seed=seed)
        return separation_report(score_corpus(model, preprocess, tokenizer, tmp, items))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(CHECKPOINT_PATH))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=TrainConfig.minutes)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--eval-only", action="store_true", help="only score a fresh corpus with --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(seed=args.seed, minutes=args.minutes, steps=args.steps)
    eval_path = Path(args.out).with_suffix(".eval.json")
    if not args.eval_only:
        stats = train(cfg, args.out)
        print(f"trained {stats['steps']} steps in {stats['train_seconds']:.0f}s, "
              f"checkpoint {stats['checkpoint_bytes'] / 1e6:.2f} MB")
    elif eval_path.is_file():
        stats = json.loads(eval_path.read_text()).get("train", {})
    else:
        stats = {}
    torch.set_num_threads(cfg.threads)
    rep = evaluate(args.out, seed=cfg.eval_seed, n=cfg.eval_n)
    # the recommended threshold travels with the checkpoint
    record = {"eval_corpus": {"seed": cfg.eval_seed, "n": cfg.eval_n}, **rep, "train": stats}
    eval_path.write_text(json.dumps(record, indent=2) + "\n")
    for cls in ("true", "swapped"):
        s = rep[cls]
        print(f"{cls:8s} n={s['n']:4d}  min {s['min']:.3f}  median {s['median']:.3f}  max {s['max']:.3f}")
    print(
        f"threshold {rep['threshold']:.3f} (margin {rep['margin']:+.3f}): drops "
        f"{rep['swapped_dropped']}/{rep['swapped']['n']} swapped, {rep['true_dropped']}/{rep['true']['n']} others; "
        f"precision {rep['precision']:.3f} recall {rep['recall']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
