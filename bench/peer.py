"""The peer: Hugging Face ``transformers``' GPT-2 of bankllm's shape (optional dependency).

``GPT2LMHeadModel`` with the same layers, heads, width, context, vocabulary and tied
embeddings, the config's dropout on the embeddings and residual branches and none inside attention
(as bankllm's model), GPT-2's tanh GELU, and its default attention (SDPA). It is trained
through the same loss (summed token cross-entropy over the batch's target tokens), micro-batches,
precision and AdamW as bankllm's trainer.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import torch
import torch.nn.functional as F

from bankllm.data import IGNORE_INDEX
from bankllm.model import GPTConfig


def transformers_version() -> str | None:
    """The installed ``transformers`` version, or None when it is absent."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None
    return importlib.metadata.version("transformers")


def make_peer(config: GPTConfig, pad_id: int, bos_id: int, eos_id: int) -> torch.nn.Module:
    """A ``GPT2LMHeadModel`` of ``config``'s shape (``transformers`` must be installed)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    hf_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    return GPT2LMHeadModel(hf_config)


def peer_loss(model: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of the peer on inputs ``x`` and (already shifted) targets ``y``.

    No attention mask: padding is on the right and attention is causal, as in bankllm's model.
    """
    logits = model(input_ids=x).logits
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        y.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
