"""``bankllm export``: the Hugging Face folder gives bankllm's token ids, logits and greedy
answers through ``transformers`` alone, and bad input is one ``error:`` line."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bankllm.checkpoints import BEST_WEIGHTS, TOKENIZER_FILE, load_model, save_weights
from bankllm.cli import main
from bankllm.config import TrainConfig
from bankllm.generation import answer, generate
from bankllm.tokenizer import Tokenizer, split_words
from tests.conftest import make_conversations

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "what is my savings balance?"
PROBES = [
    "How much money is in my savings account?",
    "Your checking account balance is $2,450.32.",
    "Thanks, and what is the overdraft fee? I'd pay $35 (per item) - OK!",
    "WHAT's my credit card balance... 0123456789?",
    "zebra unknown words, émoji 😀 and tabs\tand\nnewlines",
]
CONVERSATIONS = [
    [{"role": "customer", "content": p}] for p in PROBES
] + [
    [
        {"role": "system", "content": "Be brief."},
        {"role": "customer", "content": "How much money is in my checking account?"},
        {"role": "agent", "content": "Your checking account balance is $1,234.50."},
        {"role": "customer", "content": "Thanks, and what is the overdraft fee?"},
    ]
]
HF_ROLES = {"customer": "user", "agent": "assistant", "system": "system"}
# quotes, a backslash and characters outside ASCII: the template holds it as a string literal
OPENING = {"role": "system", "content": 'You are Bank 🏦\'s "agent" \\ be brief, señor.'}


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizers():
    return pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained run, and a copy whose weights are large and random (logits far apart,
    positions and attention matter, answers of many different tokens)."""
    from bankllm.training import Trainer

    tmp = tmp_path_factory.mktemp("export")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations()))
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, dropout=0.1,
                      data=str(corpus), epochs=2, batch_size=8, micro_batch_size=4, lr=3e-3,
                      min_lr=3e-4, precision="fp32", threads=1)
    trained = tmp / "runs" / "tiny"
    assert Trainer(cfg, trained, show_progress=False).train() == 0
    scrambled = tmp / "runs" / "scrambled"
    scrambled.mkdir()
    for f in trained.iterdir():
        if f.is_file():
            (scrambled / f.name).write_bytes(f.read_bytes())
    model = load_model(scrambled)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5 if p.dim() >= 2 else 0.1)
    save_weights(model, scrambled / BEST_WEIGHTS)
    opened = tmp / "opened.jsonl"  # every conversation opens with one system prompt
    opened.write_text("".join(json.dumps({**c, "messages": [OPENING, *c["messages"]]}) + "\n"
                              for c in make_conversations()))
    opening = tmp / "runs" / "opening"
    opened_cfg = dataclasses.replace(cfg, data=str(opened))
    assert Trainer(opened_cfg, opening, show_progress=False).train() == 0
    return {"trained": trained, "scrambled": scrambled, "opening": opening}


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("hf")
    for name, run in runs.items():
        assert main(["export", "--run", str(run), "-o", str(out / name)]) == 0
    return {name: out / name for name in runs}


def _hf(transformers, folder: Path):
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.float32
    return tok, model.eval()


def _hf_messages(conversation):
    return [{"role": HF_ROLES[m["role"]], "content": m["content"]} for m in conversation]


def test_folder_config_and_tokenizer(transformers, runs, exports):
    tok, model = _hf(transformers, exports["trained"])
    bank = Tokenizer.load(runs["trained"] / TOKENIZER_FILE)
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert type(model).__name__ == "GPT2LMHeadModel"
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size) == (2, 2, 32, 64, len(bank))
    assert c.activation_function == "gelu" and c.layer_norm_epsilon == 1e-5
    assert (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == (0.1, 0.1, 0.0)
    assert c.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (bank.bos_id, bank.eos_id,
                                                                 bank.pad_id)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (
        bank.bos_id, bank.eos_id, bank.pad_id, bank.unk_id)
    assert sorted(model.generation_config.eos_token_id) == sorted(bank.turn_end_ids)
    assert sorted(p.name for p in exports["trained"].iterdir()) == [
        "README.md", "config.json", "generation_config.json", "model.safetensors",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


def test_token_ids_equal_bankllms(transformers, runs, exports):
    tok = transformers.AutoTokenizer.from_pretrained(exports["trained"])
    bank = Tokenizer.load(runs["trained"] / TOKENIZER_FILE)
    for text in PROBES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == bank.encode_text(text), text
        assert tok.convert_ids_to_tokens(ids) == [
            w if w in bank.index else "<unk>" for w in split_words(text)]
        assert tok.decode(ids) == bank.decode(ids, skip_special=False)
    assert bank.unk_id in tok(PROBES[-1])["input_ids"]  # unknown words really were probed
    for conv in CONVERSATIONS:
        want = bank.encode_prompt(conv)
        got = tok.apply_chat_template(_hf_messages(conv), add_generation_prompt=True)
        if isinstance(got, dict) or hasattr(got, "keys"):  # transformers 5 returns a mapping
            got = got["input_ids"]
        assert got == want
        assert tok.apply_chat_template(conv, add_generation_prompt=True,
                                       tokenize=False).count("<agent>") >= 1
        written = " ".join(f"<{m['role']}> {m['content']}" for m in conv)
        assert tok(f"<bos> {written} <agent>")["input_ids"] == want  # prompt written out


def test_tokenizer_splits_like_bankllm_on_unicode(transformers, exports):
    """The pre-tokeniser's pieces equal split_words on odd text (\\d and \\s as Python's re
    has them); only lower-casing differs (final sigma), outside any vocabulary."""
    tok = transformers.AutoTokenizer.from_pretrained(exports["trained"])
    backend = tok.backend_tokenizer

    def pieces(text):
        normal = backend.normalizer.normalize_str(text)
        return [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(normal)]

    for text in ["٣ digits ① ² İstanbul ǅ ß ﬁ \x1c\x85\xa0\u3000end", "e\u0301 café 😀 a–b",
                 "it's ''a'b' don't\x0bx\u2028y", "$2,450.32 ٠١٢٣ ₹ 5\u00a0000"]:
        assert pieces(text) == split_words(text), text


@pytest.mark.parametrize("which", ["trained", "scrambled"])
def test_logits_equal_bankllms(transformers, runs, exports, which):
    bank = Tokenizer.load(runs[which] / TOKENIZER_FILE)
    ours = load_model(runs[which])
    tok, theirs = _hf(transformers, exports[which])
    worst = 0.0
    for conv in CONVERSATIONS:
        ids = tok.apply_chat_template(_hf_messages(conv), add_generation_prompt=True,
                                      tokenize=False)
        ids = tok(ids, return_tensors="pt")["input_ids"]
        assert ids[0].tolist() == bank.encode_prompt(conv)
        with torch.no_grad():
            want, _ = ours(ids)
            got = theirs(ids).logits
        assert got.shape == want.shape
        worst = max(worst, float((got - want).abs().max()))
    print(f"{which}: max |logit difference| {worst:.2e}")
    assert worst < 1e-4


@pytest.mark.parametrize("which", ["trained", "scrambled"])
def test_greedy_generation_equals_bankllms(transformers, runs, exports, which):
    bank = Tokenizer.load(runs[which] / TOKENIZER_FILE)
    ours = load_model(runs[which])
    tok, theirs = _hf(transformers, exports[which])
    prompts = [bank.encode_prompt(conv) for conv in CONVERSATIONS]
    for budget in (8, 64):  # 64: some answers run to the end of the context
        want = generate(ours, prompts, bank, max_new_tokens=budget)
        for ids, expected in zip(prompts, want, strict=True):
            n = len(ids)
            with torch.no_grad():
                out = theirs.generate(torch.tensor([ids]), attention_mask=torch.ones(1, n),
                                      do_sample=False,
                                      max_new_tokens=min(budget, 64 + 1 - n))
            new = out[0, n:].tolist()
            if new and new[-1] in bank.turn_end_ids:
                new = new[:-1]  # bankllm does not return the end token
            assert new == expected
    if which == "scrambled":  # the comparison saw real answers: ends, and full contexts
        lengths = {len(o) for o in want}
        assert len(lengths) > 2 and max(lengths) + min(map(len, prompts)) >= 40


def test_pipeline_generates(transformers, runs, exports):
    pipe = transformers.pipeline("text-generation", model=str(exports["trained"]))
    out = pipe([{"role": "user", "content": QUESTION}], do_sample=False, max_new_tokens=16)
    reply = out[0]["generated_text"][-1]
    assert reply["role"] == "assistant"
    bank = Tokenizer.load(runs["trained"] / TOKENIZER_FILE)
    want = answer(load_model(runs["trained"]), bank, QUESTION, max_new_tokens=16)
    assert reply["content"].strip() == " ".join(w for w in want.split() if w != "<unk>")
    text = pipe(f"<bos> <customer> {QUESTION} <agent>", do_sample=False, max_new_tokens=4)
    assert text[0]["generated_text"].startswith("<bos> <customer>")


def test_model_card_snippet_runs(transformers, runs, exports, capsys):
    card = (exports["trained"] / "README.md").read_text()
    bank = Tokenizer.load(runs["trained"] / TOKENIZER_FILE)
    assert str(bank.encode_prompt([{"role": "customer", "content": QUESTION}])) in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    exec(code.replace('"PATH"', repr(str(exports["trained"]))), {})
    want = answer(load_model(runs["trained"]), bank, QUESTION)
    assert capsys.readouterr().out == " ".join(w for w in want.split() if w != "<unk>") + "\n"


def test_the_chat_template_opens_as_the_runs_conversations_do(transformers, runs, exports):
    """A run whose conversations open with a system prompt: the template puts it before
    messages that start with the user, as bankllm's prompts do, and the card shows it."""
    bank = Tokenizer.load(runs["opening"] / TOKENIZER_FILE)
    assert bank.opening == (OPENING,)
    tok = transformers.AutoTokenizer.from_pretrained(exports["opening"])
    for conv in CONVERSATIONS:
        got = tok.apply_chat_template(_hf_messages(conv), add_generation_prompt=True)
        if isinstance(got, dict) or hasattr(got, "keys"):
            got = got["input_ids"]
        assert got == bank.encode_prompt(conv)
    ask = [{"role": "customer", "content": QUESTION}]
    assert bank.encode_prompt(ask) == bank.encode_prompt([OPENING, *ask])
    card = (exports["opening"] / "README.md").read_text()
    assert str(bank.encode_prompt(ask)) in card
    assert OPENING["content"] in card


def _readme_snippet() -> str:
    section = (ROOT / "README.md").read_text().split(
        "## Use the model with Hugging Face transformers")[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_snippet_answers_as_bankllm_generate_without_bankllm(transformers, runs,
                                                                     exports, capsys):
    """The README's snippet, run where ``import bankllm`` fails, prints what
    ``bankllm generate`` prints (both runs in one subprocess: one import of transformers)."""
    want = ""
    code = ("import sys\nsys.modules['bankllm'] = None\n"
            "try:\n    import bankllm\nexcept ImportError:\n    pass\n"
            "else:\n    raise SystemExit('bankllm importable')\n")
    for which in ("trained", "scrambled"):
        assert main(["generate", QUESTION, "--run", str(runs[which])]) == 0
        want += capsys.readouterr().out
        code += _readme_snippet().replace('"exports/bank-gpt"', repr(str(exports[which])))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=exports["trained"].parent, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == want


# ------------------------------------------------------------------------------ bad input


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_missing_run_is_one_error_line(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "no such run" in _one_error(capsys)
    assert not (tmp_path / "o").exists()


def test_run_without_best_weights_is_one_error_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.pt").write_bytes(b"")
    assert main(["export", "--run", str(run), "-o", str(tmp_path / "o")]) == 2
    err = _one_error(capsys)
    assert str(run / BEST_WEIGHTS) in err and "bankllm train --resume" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_existing_output_is_one_error_line(tmp_path, capsys, kind):
    run = tmp_path / "run"
    run.mkdir()
    (run / BEST_WEIGHTS).write_bytes(b"")
    out = tmp_path / "out"
    if kind == "folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        out.write_text("mine")
    assert main(["export", "--run", str(run), "-o", str(out)]) == 2
    err = _one_error(capsys)
    assert str(out) in err and "new or empty folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no temp folder left


def test_without_tokenizers_says_how_to_install(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / BEST_WEIGHTS).write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    assert main(["export", "--run", str(run), "-o", str(tmp_path / "o")]) == 2
    assert "pip install 'bankllm[hf]'" in _one_error(capsys)
    assert not (tmp_path / "o").exists()


def test_export_into_an_empty_folder(transformers, runs, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["export", "--run", str(runs["trained"]), "-o", str(out)]) == 0
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temp folder left


def test_unwritable_output_is_one_error_line(tokenizers, runs, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    assert main(["export", "--run", str(runs["trained"]), "-o", str(blocker / "out")]) == 2
    assert "cannot write the export" in _one_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
