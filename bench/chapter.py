"""The naive chapter pipeline, frozen as the benchmark's baseline.

The chapter's GPT (bankllm's model before the speed work: ``nn.Dropout`` masks, the fused SDPA
kernel in training too), trained as the chapter does: every micro-batch of 4 padded to the
full 256-token context, fp32, 8 accumulation steps each adding ``mean loss / 8``. Its state
dict has the same keys as :class:`bankllm.model.GPT`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bankllm.data import IGNORE_INDEX, EncodedCorpus, collate, micro_batches
from bankllm.model import GPTConfig

MICRO_BATCH, ACCUMULATION = 4, 8


class _Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class _MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class _Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = _Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = _MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ChapterGPT(nn.Module):
    """The chapter's model: same shape, initialisation and parameters as bankllm's GPT."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the cross-entropy over the non-ignored targets (as bankllm's GPT)."""
        positions = torch.arange(idx.size(1), device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction
        )
        return logits, loss


def chapter_accumulate(
    model: ChapterGPT, corpus: EncodedCorpus, batch: list[int], pad_id: int
) -> tuple[int, int]:
    """The chapter's accumulation over one batch; returns (target tokens, computed positions)."""
    tokens = positions = 0
    for mb in micro_batches(batch, MICRO_BATCH):
        x, y = collate(corpus, mb, pad_id, length=model.config.block_size)
        _, loss = model(x, y)
        (loss / ACCUMULATION).backward()
        tokens += int((y != IGNORE_INDEX).sum())
        positions += x.numel()
    return tokens, positions
