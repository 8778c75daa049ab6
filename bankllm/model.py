"""A GPT language model in one file, in the spirit of nanoGPT's ``model.py``.

Pre-LayerNorm transformer blocks, causal self-attention, a GELU MLP, learned position
embeddings, input and output embeddings tied, and GPT-2 initialisation so that the
untrained model predicts near-uniformly (loss close to ln V).

Dropout is applied to the embeddings, the attention output projection and the MLP, but not
inside attention. Three choices are made for speed on CPU (``bench/README.md`` has figures):

- The MLP uses the exact (erf) GELU, as nanoGPT does, not GPT-2's tanh approximation (they
  differ by at most 5e-4): PyTorch's CPU tanh makes the approximation slower to run.
- Training attention is written out (``q @ k^T``, masked softmax, ``@ v``): the same function
  as ``scaled_dot_product_attention``, whose fused CPU kernel is fast forward but several times
  slower backward at these sequence lengths (tens to a few hundred tokens). Decoding with a
  mask or a KV cache still uses the fused kernel.
- Dropout masks come from :func:`dropout_mask` (four elements per 64-bit draw of torch's
  generator, the drop probability rounded to 2**-16) instead of ``bernoulli_`` (one draw and
  a double per element), and are applied together with the residual add (``torch.addcmul``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bankllm.data import IGNORE_INDEX

# Per-layer (key, value) tensors of shape (B, n_head, S, head_dim) kept between decoding steps.
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    dropout: float = 0.1


DROPOUT_RESOLUTION = 2**16  # a dropout mask spends 16 random bits per element


def _dropped_words(p: float) -> int:
    """How many of the 2**16 values of a 16-bit word drop an element: ``p`` rounded."""
    return min(round(p * DROPOUT_RESOLUTION), DROPOUT_RESOLUTION - 1)


def dropout_keep_scale(p: float) -> float:
    """``1 / P(keep)`` for :func:`dropout_mask`'s drop probability ``p`` rounded to 2**-16.

    Scaling kept elements by it keeps ``E[dropout(y)] = y`` exactly (the rounding moves the
    drop probability by at most 7.6e-6).
    """
    return DROPOUT_RESOLUTION / (DROPOUT_RESOLUTION - _dropped_words(p))


def dropout_mask(
    shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A tensor of 0s and 1s in ``dtype``, each 0 with probability ``p`` rounded to 2**-16.

    Each 64-bit draw of torch's generator gives four uniform 16-bit words, each compared with
    one threshold: deterministic given the generator's state, like ``bernoulli_``, which
    draws (and converts) one number per element and costs five times as much on CPU.
    """
    n = math.prod(shape)
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words = draws.random_(-(2**63), 2**63 - 1).view(torch.int16)  # uniform over int16
    mask = torch.empty(words.shape, dtype=dtype, device=device)
    torch.ge(words, -(2**15) + _dropped_words(p), out=mask)
    return mask[:n].view(shape)


def add_dropout(x: torch.Tensor, y: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``x + dropout(y)``, the mask applied in the same pass as the add.

    The mask (exact 0s and 1s) takes the branch's dtype: under autocast a bf16 mask for the
    bf16 branch, half the bytes of an fp32 one; ``addcmul`` adds in the result's dtype.
    """
    if not training or p == 0.0:
        return x + y
    mask = dropout_mask(y.shape, p, y.dtype, y.device)
    return torch.addcmul(x, y, mask, value=dropout_keep_scale(p))


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(head_dim) + bias) v`` for contiguous (B, n_head, T, head_dim)
    tensors; ``bias`` (T, T) is the additive causal mask. Scale and mask ride in the matmul."""
    B, H, T, D = q.shape
    q, k, v = (t.view(B * H, T, D) for t in (q, k, v))
    att = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(D))
    return torch.bmm(att.softmax(dim=-1), v).view(B, H, T, D)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        # additive causal mask: 0 where a query may attend to a key, -inf above the diagonal
        bias = torch.full((config.block_size, config.block_size), float("-inf")).triu(1)
        self.register_buffer("causal_bias", bias, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The attention output before its dropout (the block adds that with the residual)."""
        B, T, C = x.shape
        # q, k, v of shape (B, n_head, T, head_dim), each contiguous (one copy for the three)
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous()
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        elif past is not None:
            # new queries sit at the end of the keys: causal aligned bottom-right (SDPA's
            # is_causal aligns top-left, which would hide the cached keys from a single query)
            S = k.size(2)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # training and scoring: causal attention written out (see the module docstring)
            y = causal_attention(q, k, v, self.causal_bias[:T, :T])
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP output before its dropout (the block adds that with the residual)."""
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.dropout = config.dropout
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, present = self.attn(self.ln_1(x), attn_mask, past)
        x = add_dropout(x, a, self.dropout, self.training)
        x = add_dropout(x, self.mlp(self.ln_2(x)), self.dropout, self.training)
        return x, present


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Number of parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _trunk(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        past_kv: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        x = self.wte(idx) + self.wpe(positions)
        if self.training and self.config.dropout > 0.0:
            p = self.config.dropout
            x = x * dropout_mask(x.shape, p, x.dtype, x.device).mul_(dropout_keep_scale(p))
        present: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, attn_mask, None if past_kv is None else past_kv[i])
            present.append(kv)
        return self.ln_f(x), present

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, V)`` and, with ``targets``, the cross-entropy loss.

        Targets equal to :data:`~bankllm.data.IGNORE_INDEX` are ignored. ``reduction="sum"``
        returns the summed loss, which the trainer divides by the target-token count of the
        whole accumulation window.
        """
        T = idx.size(1)
        if self.config.block_size < T:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
        positions = torch.arange(T, device=idx.device)
        h, _ = self._trunk(idx, positions)
        logits = self.lm_head(h)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction=reduction,
        )
        return logits, loss

    def forward_cached(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor,
        attn_mask: torch.Tensor | None,
        past_kv: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """One decoding step: logits of the last position and the extended KV cache.

        ``positions`` (B, T) gives each new token's position; ``attn_mask`` (B, 1, T, S) is
        True where a query may attend to a key (S = cached + new tokens), or None for a
        plain causal prefill without padding.
        """
        h, present = self._trunk(idx, positions, attn_mask, past_kv)
        return self.lm_head(h[:, -1, :]), present
