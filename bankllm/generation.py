"""Batched decoding with a KV cache: greedy or sampled, prompts of any lengths in one batch.

Prompts of a batch are left-padded to a common length. Each row gets its own positions
(``0 .. n-1`` over its real tokens, so a padded prompt sees exactly the positions it would see
alone) and an attention mask that hides the padding; a pad query attends to itself only, so no
softmax row is empty (an all-masked row would give NaN and poison the cache). Prompts are
sorted by length before batching (less padding) and the results returned in input order.

A row stops at the first end-of-turn token (any of ``tokenizer.turn_end_ids``, not returned),
after ``max_new_tokens`` tokens, or when its context is full: a row of ``n`` tokens may produce
at most ``block_size + 1 - n`` tokens, the last position the model was trained to predict.
Finished rows are dropped from the batch (their cache rows too) as they accumulate, so one long
answer does not keep a whole batch busy.

The cached path runs the model's own modules but keeps keys and values in preallocated buffers
written in place (:class:`_StaticCache`): ``GPT.forward_cached`` concatenates onto a growing
cache, and on CPU those reallocations cost more than the model at batch sizes in the hundreds.
``use_cache=False`` recomputes the whole padded sequence with ``GPT.forward_cached`` at every
step: the reference the cached path must equal (tests/test_generation.py), and the baseline of
the speed benchmark.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bankllm.errors import BankLLMError
from bankllm.model import GPT
from bankllm.precision import inference, run_precision
from bankllm.tokenizer import Tokenizer

Messages = Sequence[dict[str, Any]]


def _pick(
    logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token per row of ``logits`` (B, V): argmax, or a seeded sample."""
    logits = logits.float()
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _prefill_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool: causal, real keys only; every query may see itself (no empty rows)."""
    T = valid.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    mask = causal.unsqueeze(0) & valid.unsqueeze(1)
    mask |= torch.eye(T, dtype=torch.bool, device=valid.device).unsqueeze(0)
    return mask.unsqueeze(1)


class _StaticCache:
    """Per-layer key/value buffers (B, n_head, capacity, head_dim), written in place.

    Writing a step costs a few kB; ``torch.cat`` onto a growing cache (what
    ``GPT.forward_cached`` does) reallocates and copies the whole cache at every step, which
    on CPU cost more than the model itself at batch sizes in the hundreds. The storage is
    kept in ``pool`` and reused by the next batch of the same :func:`generate` call (a fresh
    multi-100-MB allocation per batch is mostly page faults), and finished rows are dropped
    by moving the live rows to the front, without a new allocation.
    """

    def __init__(self, capacity: int, pool: dict[int, torch.Tensor]):
        self.capacity = capacity
        self.pool = pool
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    def _buffer(self, key: int, like: torch.Tensor) -> torch.Tensor:
        B, H, _, D = like.shape
        store = self.pool.get(key)
        if (store is None or store.dtype != like.dtype or store.size(0) < B
                or store.size(2) < self.capacity):
            cap = max(self.capacity, 0 if store is None else store.size(2))
            store = like.new_empty(max(B, 0 if store is None else store.size(0)), H, cap, D)
            self.pool[key] = store
        return store[:B, :, : self.capacity]

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> int:
        if len(self.k) <= layer:  # first write: take storage in the dtype the model computes in
            self.k.append(self._buffer(2 * layer, k))
            self.v.append(self._buffer(2 * layer + 1, v))
        end = start + k.size(2)
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return end

    def select(self, rows: list[int]) -> None:
        """Keep ``rows`` (ascending) as rows ``0..len(rows)-1``, in place."""
        for buffers in (self.k, self.v):
            for layer, t in enumerate(buffers):
                for new, old in enumerate(rows):
                    if new != old:
                        t[new] = t[old]
                buffers[layer] = t[: len(rows)]


def _forward_static(
    model: GPT,
    idx: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    cache: _StaticCache,
    start: int,
) -> torch.Tensor:
    """Logits of the last position of ``idx`` (B, T) placed at cache slots ``start..start+T``.

    The same computation as :meth:`GPT.forward_cached` in eval mode (dropout is the identity),
    except that keys and values go into ``cache`` in place. ``mask`` (B, 1, T, start + T) is
    True where a query may attend; None means plain causal attention with no cache before it.
    """
    x = model.wte(idx) + model.wpe(positions)
    B, T, C = x.shape
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))
        end = cache.write(layer, start, k, v)
        keys, values = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
        if mask is None:
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.ln_f(x[:, -1, :]))


def _decode_batch(
    model: GPT,
    prompts: list[list[int]],
    budgets: list[int],
    stop_ids: torch.Tensor,
    pad_id: int,
    temperature: float,
    top_k: int,
    generator: torch.Generator | None,
    use_cache: bool,
    pool: dict[int, torch.Tensor],
) -> list[list[int]]:
    """Decode one batch; ``budgets[i]`` >= 1 is the most tokens row ``i`` may produce.
    ``pool``: cache storage shared by the batches of one call."""
    device = stop_ids.device
    B, L = len(prompts), max(len(p) for p in prompts)
    steps = max(budgets)
    # all tokens of the batch, left-padded; a finished row's later slots stay padding
    idx = torch.full((B, L + steps), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((B, L + steps), dtype=torch.bool, device=device)
    for r, p in enumerate(prompts):
        idx[r, L - len(p) : L] = torch.tensor(p, dtype=torch.long, device=device)
        valid[r, L - len(p) : L] = True
    lengths = valid.sum(dim=1)  # real prompt tokens per row
    budget = torch.tensor(budgets, dtype=torch.long, device=device)
    rows = torch.arange(B, device=device)  # original row of each active row
    out: list[list[int]] = [[] for _ in range(B)]
    padded = not bool(valid[:, :L].all())

    def positions_of(v: torch.Tensor) -> torch.Tensor:
        return (v.long().cumsum(dim=1) - 1).clamp(min=0)

    cache = _StaticCache(L + steps - 1, pool) if use_cache else None
    mask = _prefill_mask(valid[:, :L]) if padded else None
    if cache is not None:
        logits = _forward_static(model, idx[:, :L], positions_of(valid[:, :L]), mask, cache, 0)
    else:
        logits, _ = model.forward_cached(idx[:, :L], positions_of(valid[:, :L]), mask, None)
    step = 0
    alive = torch.ones(B, dtype=torch.bool, device=device)
    last = model.config.block_size - 1
    while True:
        nxt = _pick(logits, temperature, top_k, generator)
        ended = torch.isin(nxt, stop_ids)
        for r, token, a, e in zip(rows.tolist(), nxt.tolist(), alive.tolist(), ended.tolist(),
                                  strict=True):
            if a and not e:
                out[r].append(token)
        step += 1
        alive &= ~ended & (budget > step)
        n_alive = int(alive.sum())
        if n_alive == 0:
            return out
        # Finished rows ride along (their output is ignored) until a quarter of the batch has
        # finished; then they are dropped, cache rows included. Compacting at every finish
        # would copy the whole cache each time.
        if alive.numel() - n_alive >= max(1, alive.numel() // 4):
            keep = alive.nonzero().squeeze(1)
            rows, nxt, budget, lengths = rows[keep], nxt[keep], budget[keep], lengths[keep]
            idx, valid, alive = idx[keep], valid[keep], alive[keep]
            if cache is not None:
                cache.select(keep.tolist())
        S = L + step  # tokens in the context after appending the new ones
        idx[:, S - 1] = nxt
        valid[:, S - 1] = True
        if cache is not None:
            # a finished row's position may pass the context end: clamp (its output is unused)
            pos = (lengths + step - 1).clamp(max=last).unsqueeze(1)
            # always an explicit mask: SDPA's is_causal aligns top-left, wrong for one query
            logits = _forward_static(
                model, idx[:, S - 1 : S], pos, valid[:, None, None, :S], cache, S - 1
            )
        else:
            mask = _prefill_mask(valid[:, :S]) if padded else None
            pos = positions_of(valid[:, :S]).clamp(max=last)
            logits, _ = model.forward_cached(idx[:, :S], pos, mask, None)


def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    tokenizer: Tokenizer,
    max_new_tokens: int | Sequence[int] = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    use_cache: bool = True,
    precision: str | None = None,
    stop_at_turn_end: bool = True,
) -> list[list[int]]:
    """Continue each prompt (token ids); return the generated ids, without the end token.

    ``temperature == 0``: greedy; else softmax sampling at that temperature from the ``top_k``
    most likely tokens (0 = all) with a ``torch.Generator`` seeded by ``seed`` (the same call
    gives the same tokens). ``max_new_tokens`` is one budget or one per prompt. Rows stop at an
    end-of-turn token (unless ``stop_at_turn_end`` is False: then only the budget and the
    context stop them) or when the context is full; a prompt that already fills the context
    gets ``[]``. ``precision``: "bf16" runs under bf16 autocast, None/"fp32" in fp32.
    Runs under ``torch.no_grad()`` in eval mode; the model's mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    budgets = (
        [int(max_new_tokens)] * len(prompts)
        if isinstance(max_new_tokens, int)
        else [int(b) for b in max_new_tokens]
    )
    if len(budgets) != len(prompts):
        raise ValueError("max_new_tokens: need one budget per prompt")
    block = model.config.block_size
    param = next(model.parameters())
    device = param.device
    stop = sorted(tokenizer.turn_end_ids) if stop_at_turn_end else [tokenizer.eos_id]
    stop_ids = torch.tensor(stop, dtype=torch.long, device=device)
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    results: list[list[int]] = [[] for _ in prompts]
    todo = []
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty (it needs at least <bos>)")
        budgets[i] = min(budgets[i], block + 1 - len(p))
        if budgets[i] > 0:
            todo.append(i)
    todo.sort(key=lambda i: (-len(prompts[i]), i))
    pool: dict[int, torch.Tensor] = {}
    with inference(model, precision):
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            outs = _decode_batch(
                model,
                [list(prompts[i]) for i in chunk],
                [budgets[i] for i in chunk],
                stop_ids,
                tokenizer.pad_id,
                temperature,
                top_k,
                generator,
                use_cache,
                pool,
            )
            for i, o in zip(chunk, outs, strict=True):
                results[i] = o
    return results


def greedy_predictions(
    model: GPT,
    sequences: Sequence[Sequence[int]],
    pad_id: int = 0,
    batch_size: int = 64,
    precision: str | None = None,
) -> list[list[int]]:
    """Teacher-forced argmax: ``out[i][t]`` is the model's most likely token after
    ``sequences[i][: t + 1]``. One forward pass per batch (right-padded, sorted by length);
    sequences longer than ``block_size`` are cut to it.

    Greedy decoding from a prefix reproduces a continuation exactly iff every one of these
    predictions over the continuation equals its true token, so exact-match extraction needs
    no token-by-token decoding.
    """
    block = model.config.block_size
    seqs = [list(s[:block]) for s in sequences]
    order = sorted((i for i, s in enumerate(seqs) if s), key=lambda i: -len(seqs[i]))
    out: list[list[int]] = [[] for _ in seqs]
    device = next(model.parameters()).device
    with inference(model, precision):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            T = len(seqs[chunk[0]])
            x = torch.full((len(chunk), T), pad_id, dtype=torch.long, device=device)
            for r, i in enumerate(chunk):
                x[r, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
            pred = model(x)[0].argmax(dim=-1).tolist()
            for r, i in enumerate(chunk):
                out[i] = pred[r][: len(seqs[i])]
    return out


def _as_messages(item: str | Messages) -> list[dict[str, Any]]:
    if isinstance(item, str):
        return [{"role": "customer", "content": item}]
    return [dict(m) for m in item]


def answers(
    model: GPT,
    tokenizer: Tokenizer,
    items: Sequence[str | Messages],
    **kwargs: Any,
) -> list[str]:
    """The agent's next turn for each item (a customer message, or a conversation so far), as
    the tokenizer's words joined by spaces (the :func:`~bankllm.tokenizer.normalise_text`
    form). ``kwargs`` go to :func:`generate`."""
    prompts = [tokenizer.encode_prompt(_as_messages(item)) for item in items]
    return [tokenizer.decode(ids) for ids in generate(model, prompts, tokenizer, **kwargs)]


def answer(
    model: GPT, tokenizer: Tokenizer, messages_or_text: str | Messages, **kwargs: Any
) -> str:
    """The agent's answer to one customer message or conversation (see :func:`answers`)."""
    return answers(model, tokenizer, [messages_or_text], **kwargs)[0]


def detokenize(text: str) -> str:
    """Readable form of tokenizer words: digits and number punctuation rejoined, punctuation
    attached (``"$ 2 , 4 5 0 . 3 2 ."`` -> ``"$2,450.32."``). For display only."""
    import re

    text = re.sub(r"(?<=\d) (?=\d)", "", text)
    text = re.sub(r"(?<=\d) ([.,]) (?=\d)", r"\1", text)
    text = re.sub(r"\$ (?=\d)", "$", text)
    text = re.sub(r" ([.,!?;:%])", r"\1", text)
    text = re.sub(r" ' ", "'", text)
    return text[:1].upper() + text[1:]


def cli_generate(args: Any) -> int:
    """``bankllm generate PROMPT...``: print ``customer -> answer`` per prompt, one per line."""
    from bankllm.checkpoints import TOKENIZER_FILE, load_model, read_metrics

    if args.max_new_tokens < 1:
        raise BankLLMError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise BankLLMError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k < 0:
        raise BankLLMError(f"--top-k must be >= 0, got {args.top_k}")
    if any(not prompt.strip() for prompt in args.prompts):
        raise BankLLMError("a prompt is empty: give the customer's message as text")
    run_dir = Path(args.run)
    model = load_model(run_dir)
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    precision = run_precision(read_metrics(run_dir), next(model.parameters()).device)
    replies = answers(
        model,
        tokenizer,
        list(args.prompts),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        precision=precision,
    )
    for prompt, reply in zip(args.prompts, replies, strict=True):
        sys.stdout.write(f"{prompt} → {detokenize(reply)}\n")
    return 0
