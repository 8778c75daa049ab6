"""Export a run to a Hugging Face ``transformers`` folder (``bankllm export``).

The folder loads with ``AutoModelForCausalLM.from_pretrained(OUT)`` and
``AutoTokenizer.from_pretrained(OUT)`` on a machine without bankllm::

    config.json              GPT2Config: the run's shape, exact GELU, eps, dropouts, token ids
    generation_config.json   greedy, 64 new tokens, stops at <eos> and every role marker
    model.safetensors        GPT2LMHeadModel weights (fp32 as trained; lm_head tied to wte)
    tokenizer.json           a ``tokenizers`` WordLevel tokenizer splitting as bankllm does
    tokenizer_config.json    PreTrainedTokenizerFast, special tokens, a chat template
    special_tokens_map.json
    README.md                a short model card: how to build the prompt, how it was made

bankllm's GPT is GPT-2's architecture: pre-LayerNorm blocks (eps 1e-5, with biases), a fused
q/k/v projection with bias, a 4x MLP, learned positions, tied embeddings, an ``lm_head``
without bias, dropout on the embeddings and the residual branches but not inside attention.
So the mapping is one to one (no zero biases are needed); the differences are:

- the activation is the exact (erf) GELU: ``activation_function="gelu"``, not GPT-2's
  ``"gelu_new"`` tanh approximation;
- ``nn.Linear`` weights are stored (out, in), GPT-2's ``Conv1D`` (in, out): transposed;
- ``attn_pdrop`` is 0 (bankllm does not drop attention probabilities).

The tokenizer reproduces :func:`bankllm.tokenizer.split_words`: a ``Lowercase`` normaliser and
a ``Split`` pre-tokeniser keeping the matches of bankllm's regex, whose ``\\d`` and ``\\s`` are
written out as the exact character sets Python's ``re`` gives them (Oniguruma's differ).
Special and role tokens (``<bos>``, ``<customer>``, ``<agent>`` ...) are added tokens, kept
whole. Known difference: Rust lower-cases a few characters otherwise than Python (a final
capital sigma becomes ``σ``, not ``ς``; letters newer than Python's Unicode tables); outside
the vocabulary both give ``<unk>`` anyway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from bankllm.errors import BankLLMError
from bankllm.model import GPT
from bankllm.tokenizer import BOS, EOS, PAD, ROLE_TOKENS, SPECIAL_TOKENS, UNK, Tokenizer

HF_EXTRA = "pip install 'bankllm[hf]'"
DEFAULT_MAX_NEW_TOKENS = 64  # bankllm generate's default
# bankllm.tokenizer._WORD_RE; the export rewrites its \d and \s (see the module docstring)
WORD_PATTERN = r"[a-z]+(?:'[a-z]+)*|\d|[^\sa-z\d]"

# Chat template: messages -> bankllm's prompt ``<bos> <customer> ... <agent>``. HF's "user" and
# "assistant" roles are bankllm's "customer" and "agent"; bankllm's own names work too. Messages
# that start with the customer get the run's opening first (Tokenizer.encode_prompt), written
# into the template as a string literal; {opening} is where it goes.
_CHAT_TEMPLATE = (
    "{%- set markers = {'user': '<customer>', 'customer': '<customer>', "
    "'assistant': '<agent>', 'agent': '<agent>', 'system': '<system>'} -%}"
    "{{- bos_token -}}"
    "{opening}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in markers -%}"
    "{{- raise_exception('unknown role ' + message['role'] + "
    "': use user, assistant or system') -}}"
    "{%- endif -%}"
    "{{- ' ' + markers[message['role']] + ' ' + message['content'] -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' <agent>' -}}{%- endif -%}"
)


def _opening_text(tokenizer: Tokenizer) -> str:
    """The tokenizer's opening as a prompt writes it out (`` <system> ...``), or ""."""
    return "".join(f" {ROLE_TOKENS[m['role']]} {m['content']}" for m in tokenizer.opening)


def chat_template(tokenizer: Tokenizer) -> str:
    """The Jinja chat template that builds ``tokenizer.encode_prompt``'s prompt from messages,
    the tokenizer's opening included."""
    if not tokenizer.opening:
        return _CHAT_TEMPLATE.replace("{opening}", "")
    text = _opening_text(tokenizer)
    # a JSON string is a Jinja string literal when its non-ASCII characters are left as they are
    literal = json.dumps(text, ensure_ascii=False)
    return _CHAT_TEMPLATE.replace(
        "{opening}",
        "{%- if messages and messages[0]['role'] in ('user', 'customer') -%}"
        f"{{{{- {literal} -}}}}{{%- endif -%}}")


# ----------------------------------------------------------------------------------- model


def hf_config(model: GPT, tokenizer: Tokenizer) -> dict[str, Any]:
    """``config.json`` of a ``GPT2LMHeadModel`` equal to ``model`` (plain JSON: no
    transformers needed to write it)."""
    cfg = model.config
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    if len(eps) != 1:
        raise BankLLMError(f"export: the model's LayerNorms use several eps values {eps}")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": 4 * cfg.n_embd,
        "activation_function": "gelu",  # bankllm's MLP: F.gelu, exact (erf)
        "layer_norm_epsilon": eps.pop(),
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": 0.0,  # bankllm has no dropout inside attention
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "torch_dtype": "float32",
    }


def generation_config(model: GPT, tokenizer: Tokenizer) -> dict[str, Any]:
    """``generation_config.json``: bankllm generate's defaults (greedy, 64 new tokens, stop at
    any end-of-turn token: ``<eos>`` or a role marker)."""
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": sorted(tokenizer.turn_end_ids),
        "pad_token_id": tokenizer.pad_id,
        "do_sample": False,
        "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
    }


_LINEAR = re.compile(r"(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """``model``'s weights under GPT2LMHeadModel's names; Linear weights transposed for GPT-2's
    Conv1D. The tied ``lm_head.weight`` is not stored (``tie_word_embeddings``)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if tensor.data_ptr() != model.wte.weight.data_ptr():
                raise BankLLMError("export: lm_head is not tied to wte; GPT-2 ties them")
            continue
        hf_name = "transformer." + re.sub(r"^blocks\.", "h.", name)
        if not re.fullmatch(
            r"transformer\.(wte|wpe|ln_f|h\.\d+\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|"
            r"mlp\.c_fc|mlp\.c_proj))\.(weight|bias)",
            hf_name,
        ):
            raise BankLLMError(f"export: no GPT-2 counterpart for the model's tensor '{name}'")
        t = tensor.detach().cpu()
        out[hf_name] = (t.t() if _LINEAR.search(name) else t).contiguous()
    return out


# ------------------------------------------------------------------------------- tokenizer


def _char_class(pattern: str) -> str:
    """The characters Python's ``re`` matches with ``pattern`` (one character), as an
    Oniguruma class body of ``\\x{...}`` ranges."""
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    codes = sorted({ord(c) for c in re.findall(pattern, every)})
    ranges: list[list[int]] = []
    for c in codes:
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join(
        f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges
    )


@lru_cache(maxsize=1)
def word_regex() -> str:
    """bankllm's word regex for ``tokenizers`` (Oniguruma), ``\\d`` and ``\\s`` spelled out."""
    from bankllm import tokenizer as bt

    if bt._WORD_RE.pattern != WORD_PATTERN:
        raise BankLLMError("export: bankllm's word regex changed; update bankllm/export.py")
    digits, spaces = _char_class(r"\d"), _char_class(r"\s")
    return f"[a-z]+(?:'[a-z]+)*|[{digits}]|[^{spaces}a-z{digits}]"


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise BankLLMError(
            f"export needs the 'tokenizers' package, which is not installed: {HF_EXTRA}"
        ) from None
    return tokenizers


def hf_tokenizer(tokenizer: Tokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` giving the same ids as ``tokenizer`` (WordLevel, ``<unk>``
    for unknown words), special and role tokens kept whole, decoding to words joined by
    spaces as :meth:`Tokenizer.decode` does."""
    tk = _import_tokenizers()
    hf = tk.Tokenizer(tk.models.WordLevel(vocab=dict(tokenizer.index), unk_token=UNK))
    hf.normalizer = tk.normalizers.Lowercase()
    hf.pre_tokenizer = tk.pre_tokenizers.Split(
        tk.Regex(word_regex()), behavior="removed", invert=True
    )
    # WordPiece's decoder joins tokens with spaces (no vocabulary word starts with "##")
    hf.decoder = tk.decoders.WordPiece(prefix="##", cleanup=False)
    hf.add_special_tokens(
        [tk.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return hf


def tokenizer_files(tokenizer: Tokenizer, block_size: int) -> dict[str, Any]:
    """``tokenizer_config.json`` and ``special_tokens_map.json``."""
    roles = list(ROLE_TOKENS.values())
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "additional_special_tokens": roles,
        "model_max_length": block_size,
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "chat_template": chat_template(tokenizer),
    }
    return {
        "tokenizer_config.json": config,
        "special_tokens_map.json": {**special, "additional_special_tokens": roles},
    }


# ------------------------------------------------------------------------------ the folder


def model_card(run_dir: Path, model: GPT, tokenizer: Tokenizer, best: Any) -> str:
    """The export's README.md: what the model is, how to build its prompt and decode."""
    cfg = model.config
    ids = tokenizer.encode_prompt([{"role": "customer", "content": "what is my savings balance?"}])
    opening = _opening_text(tokenizer)
    opening_note = "" if not tokenizer.opening else (
        "\n\nThe training conversations open with the messages before `<customer>` above; the\n"
        "chat template puts them first when the messages start with the user (pass a system\n"
        "message of your own to replace them).")
    best_line = ""
    if isinstance(best, dict) and isinstance(best.get("val_loss"), int | float):
        best_line = f" Best validation loss {best['val_loss']:.4f} (epoch {best.get('epoch')})."
    eps = hf_config(model, tokenizer)["layer_norm_epsilon"]
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [gpt2, banking, customer-service, bankllm]
---

# bankllm banking customer-service model

A small GPT trained with bankllm on banking customer-service chat, exported by
`bankllm export` from the run `{run_dir.name}`.{best_line}

`GPT2LMHeadModel`: {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, context
{cfg.block_size} tokens, {len(tokenizer)} words of vocabulary, {model.num_params():,} parameters.
The weights are bankllm's, unchanged (fp32): exact (erf) GELU (`activation_function="gelu"`,
not GPT-2's tanh approximation), LayerNorm eps {eps}, tied input and output embeddings, no
dropout inside attention.

## Prompt

The tokenizer is word level: text is lower-cased and split into words, single digits and
single punctuation marks (`"$2,450.32"` is `$ 2 , 4 5 0 . 3 2`); unknown words are `<unk>`.
It adds no `<bos>` of its own. A prompt is written out as

    <bos>{opening} <customer> what is my savings balance? <agent>

(ids `{ids}`) or built from messages by the chat template (`user` is `<customer>`,
`assistant` is `<agent>`, `system` is `<system>`).{opening_note}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH")
model = AutoModelForCausalLM.from_pretrained("PATH")
prompt = tok.apply_chat_template(
    [{{"role": "user", "content": "What is my savings balance?"}}],
    add_generation_prompt=True, return_dict=True, return_tensors="pt",
)
n = prompt["input_ids"].shape[1]
out = model.generate(**prompt, do_sample=False,
                     max_new_tokens=min(64, model.config.n_positions + 1 - n))
print(tok.decode(out[0, n:], skip_special_tokens=True))
```

## Answer

Greedy decoding gives the tokens `bankllm generate` gives. The agent's turn ends at `<eos>`
or at the next role marker: `generation_config.json` lists all of them as end tokens (the end
token is the last generated id; `skip_special_tokens` drops it, and drops `<unk>` too, which
bankllm keeps). The answer is words joined by spaces (`your savings account balance is
$ 2 , 4 5 0 . 3 2 .`); `bankllm generate` rejoins digits and punctuation for display. A prompt
of `n` tokens may get at most {cfg.block_size + 1} - n new tokens (context {cfg.block_size}).
"""


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face folder of ``run_dir``'s best weights to ``out`` (atomically:
    built beside it, then renamed). ``out`` must not exist or be an empty folder."""
    from safetensors.torch import save

    from bankllm.checkpoints import BEST_INFO, BEST_WEIGHTS, TOKENIZER_FILE, load_model
    from bankllm.fileio import read_json

    run_dir, out = Path(run_dir), Path(os.path.abspath(out))
    if not run_dir.is_dir():
        raise BankLLMError(
            f"{run_dir}: no such run (train one with 'bankllm train' or 'tox -e train')"
        )
    if not (run_dir / BEST_WEIGHTS).is_file():
        raise BankLLMError(
            f"{run_dir / BEST_WEIGHTS}: no best weights in this run (they are written when "
            f"the first epoch's validation ends); finish the run with 'bankllm train --resume "
            f"{run_dir}' or train one"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a folder that is not empty" if out.is_dir() else "a file"
        raise BankLLMError(f"{out}: already exists and is {what}; give a new or empty folder")
    _import_tokenizers()
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    model = load_model(run_dir, "best", tokenizer=tokenizer)
    best = read_json(run_dir / BEST_INFO, "best info") if (run_dir / BEST_INFO).exists() else {}

    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    files = {
        "config.json": _json(hf_config(model, tokenizer)),
        "generation_config.json": _json(generation_config(model, tokenizer)),
        "model.safetensors": save(hf_state_dict(model), metadata={"format": "pt"}),
        "tokenizer.json": hf_tokenizer(tokenizer).to_str(pretty=True).encode(),
        **{n: _json(o) for n, o in tokenizer_files(tokenizer, model.config.block_size).items()},
        "README.md": model_card(run_dir.resolve(), model, tokenizer, best).encode(),
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a folder everywhere
        os.rename(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BankLLMError(
            f"{out}: cannot write the export ({exc.strerror or exc}); check the path and its "
            "permissions"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def cli_export(args: Any) -> int:
    """``bankllm export --run DIR -o OUT``."""
    out = export_run(args.run, args.output)
    print(f"exported {args.run} to {out} (load it with transformers' from_pretrained)")
    return 0
