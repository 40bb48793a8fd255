"""The shards feed a real training loop: a tiny causal LM + the demo CLIP tower, 20 steps on packed sequences.

Not a model: a 2-layer transformer of a few hundred parameters per layer (width 8), randomly initialised here,
with the demo CLIP model's image tower (jobs/assets/demo-clip, frozen) as the visual encoder stand-in. Each
Qwen-VL image span's 256 inner positions take the projected image feature, as Qwen-VL's visual receptor
writes its 256 features there. Attention is causal within each packed sample (position ids restart).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from formats.reader import IGNORE, QwenVLReader
from formats.tokenizer import IMAGE_INNER, get_tokenizer

WIDTH = 8


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from curation.commands.build import build_dataset
    from curation.democorpus import write_clean_records

    root = tmp_path_factory.mktemp("smoke")
    # the demo's tasks, packed as the demo packs them
    build_dataset(str(write_clean_records(root, n=40, seed=2)), str(root / "out"), tasks="caption,vqa,ref_grounding,grounded_caption,ocr",
                  pack=2048, runner="local")
    return root / "out"


class Layer(nn.Module):
    def __init__(self, d: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        return x + self.down(F.gelu(self.up(self.n2(x))))


class TinyVLM(nn.Module):
    def __init__(self, vocab: int, clip_visual, clip_dim: int, d: int = WIDTH, max_pos: int = 2048):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_pos, d)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.layers = nn.ModuleList([Layer(d), Layer(d)])
        self.norm = nn.LayerNorm(d)
        self.visual = clip_visual  # frozen stand-in
        self.proj = nn.Linear(clip_dim, d)
        self.query = nn.Parameter(torch.zeros(IMAGE_INNER, d))  # one learned offset per inner position

    def forward(self, ids, positions, mask, images, spans):
        x = self.embed(ids) + self.pos(positions)
        if spans:
            with torch.no_grad():
                feats = self.visual(F.interpolate(images, size=64, mode="bicubic", align_corners=False))
            feats = self.proj(feats)  # (n_images, d)
            x = x.clone()
            for (row, start), f in zip(spans, feats):
                x[row, start + 1 : start + 1 + IMAGE_INNER] = f + self.query
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) @ self.embed.weight.T


def _block_causal(seq_lens, n):
    """(n, n) bool: attend to earlier positions of the same packed sample only."""
    seg = torch.repeat_interleave(torch.arange(len(seq_lens)), torch.as_tensor(seq_lens))
    seg = torch.cat([seg, torch.full((n - len(seg),), -1)])
    same = seg[:, None] == seg[None, :]
    return same & torch.tril(torch.ones(n, n, dtype=torch.bool)) | torch.eye(n, dtype=torch.bool)


def test_twenty_steps_on_packed_sequences_loss_finite_and_decreasing(packed):
    from filters.clip_score import ClipModelSpec, load_clip
    from jobs.demo import DEMO_CLIP_DIR

    torch.manual_seed(0)
    tok = get_tokenizer("qwen-vl")
    reader = QwenVLReader(packed, table="sequences", seed=0, buffer_size=8)
    batches = []
    for b in reader.loader(batch_size=1):
        batches.append(b)
        if len(batches) == 20:
            break
    assert len(batches) == 20
    # labels where the spec says: image spans and prompts ignored, each target supervised
    for b in batches:
        ids, labels = b["input_ids"][0], b["labels"][0]
        starts = (ids == tok.img_id).nonzero().flatten().tolist()
        assert len(starts) == b["images"].shape[0] and b["images"].shape[1:] == (3, 448, 448)
        for s in starts:
            assert ids[s + IMAGE_INNER + 1] == tok.img_end_id and labels[s : s + IMAGE_INNER + 2].eq(IGNORE).all()
        assert (labels == tok.eos_id).sum() == len(b["seq_lens"][0])  # each member's target ends with EOS, supervised
    # a compact vocabulary of the ids these batches use (the full one is 151,860 wide)
    used = torch.unique(torch.cat([torch.cat([b["input_ids"].flatten(), b["labels"].flatten()]) for b in batches]))
    used = used[used != IGNORE]
    remap = torch.full((int(used.max()) + 1,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))

    clip, _, _ = load_clip(ClipModelSpec(str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"), checkpoint=str(DEMO_CLIP_DIR / "demo_clip.pt")))
    visual = clip.visual.eval().requires_grad_(False)
    model = TinyVLM(len(used), visual, clip_dim=128)
    per_layer = sum(p.numel() for p in model.layers[0].parameters())
    assert 100 <= per_layer <= 1000  # "a few hundred parameters per layer"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def loss_of(b):
        ids = remap[b["input_ids"]]
        labels = torch.where(b["labels"] == IGNORE, IGNORE, remap[b["labels"].clamp(min=0)])
        n = ids.shape[1]
        mask = _block_causal(b["seq_lens"][0].tolist(), n)[None, None]
        spans = [(0, s) for s in (b["input_ids"][0] == tok.img_id).nonzero().flatten().tolist()]
        logits = model(ids, b["position_ids"], mask, b["images"], spans)
        # next-token loss; the target of a sample's last position is the next sample's first: never supervised
        tgt = labels[:, 1:].clone()
        tgt[:, (b["position_ids"][:, 1:] == 0)[0]] = IGNORE
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE)

    def held_loss():
        with torch.no_grad():
            return sum(loss_of(b).item() for b in batches[::4]) / len(batches[::4])

    before = held_loss()
    losses = []
    for b in batches:  # 20 steps, one packed sequence each (the sequences come in task groups: per-step losses jump)
        loss = loss_of(b)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    after = held_loss()
    assert all(math.isfinite(v) for v in losses + [before, after])
    assert before == pytest.approx(math.log(len(used)), rel=0.1)  # starts at chance
    assert after < 0.85 * before, (before, after, losses)
