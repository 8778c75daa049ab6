"""Batched KV-cache generation: equal to naive recomputation, to one-at-a-time decoding, stops
where it must, seeded sampling, teacher forcing, and the ``bankllm generate`` command."""

from __future__ import annotations

import random

import pytest
import torch

from bankllm.cli import main
from bankllm.generation import answer, detokenize, generate, greedy_predictions
from bankllm.model import GPT, GPTConfig
from bankllm.tokenizer import Tokenizer

WORDS = ["what", "is", "my", "balance", "your", "checking", "savings", "credit", "card",
         "account", "transfer", "fee", "the", "a"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([" ".join(WORDS + [f"w{i}" for i in range(30)])])


def random_model(tok: Tokenizer, block_size: int = 48, seed: int = 0) -> GPT:
    """A tiny untrained GPT with large weights: positions and attention matter to every
    prediction, and logits are far apart (no argmax ties to flip on rounding)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=len(tok), block_size=block_size, n_layer=2, n_head=2,
                          n_embd=32, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5)
    return model.eval()


def scripted_model(tok: Tokenizer, script: dict[int, int], block_size: int = 32) -> GPT:
    """A GPT that predicts ``script[p]`` after any token at position ``p``: blocks silenced
    (output projections zero), position embedding ``p`` = a large multiple of that token's
    embedding."""
    model = random_model(tok, block_size)
    with torch.no_grad():
        model.wte.weight.normal_(0.0, 1.0)
        for name, p in model.named_parameters():
            if "c_proj" in name:
                p.zero_()
        for pos in range(block_size):
            model.wpe.weight[pos] = 30.0 * model.wte.weight[script.get(pos, tok.index["the"])]
    return model


def prompts_of(tok: Tokenizer, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[tok.bos_id] + [rng.randrange(7, len(tok)) for _ in range(n - 1)] for n in lengths]


LENGTHS = [1, 5, 12, 3, 9, 9, 20, 2]


def test_cached_equals_uncached_on_prompts_of_unequal_lengths(tok):
    torch.set_num_threads(1)
    model = random_model(tok)
    prompts = prompts_of(tok, LENGTHS)
    cached = generate(model, prompts, tok, max_new_tokens=16, use_cache=True)
    naive = generate(model, prompts, tok, max_new_tokens=16, use_cache=False)
    assert cached == naive
    assert any(len(o) > 3 for o in cached)  # really decoded several steps


def test_batched_equals_one_at_a_time(tok):
    model = random_model(tok, seed=1)
    prompts = prompts_of(tok, LENGTHS, seed=1)
    batched = generate(model, prompts, tok, max_new_tokens=12, batch_size=3)
    alone = [generate(model, [p], tok, max_new_tokens=12)[0] for p in prompts]
    assert batched == alone


def test_each_row_stops_at_the_end_of_its_turn(tok):
    eos, word = tok.eos_id, tok.index["balance"]
    script = {p: word for p in range(10)} | {10: tok.role_ids["customer"], 11: eos}
    model = scripted_model(tok, script)
    prompts = prompts_of(tok, [2, 4, 8])
    # the token after position p is script[p]: a prompt of n tokens gets positions n-1 .. 9
    assert generate(model, prompts, tok, max_new_tokens=30) == [[word] * (11 - n)
                                                               for n in (2, 4, 8)]
    # without the turn stop <customer> is kept and <eos> still ends the sequence
    assert generate(model, prompts[:1], tok, max_new_tokens=30, stop_at_turn_end=False) == [
        [word] * 9 + [tok.role_ids["customer"]]]
    assert generate(model, prompts, tok, max_new_tokens=3) == [[word] * 3] * 3


def test_generation_stops_when_the_context_is_full(tok):
    model = scripted_model(tok, {}, block_size=16)  # never ends a turn
    out = generate(model, prompts_of(tok, [4, 16, 17, 10]), tok, max_new_tokens=100)
    # a row of n tokens may produce block_size + 1 - n tokens, a full prompt none
    assert [len(o) for o in out] == [13, 1, 0, 7]


def test_sampling_is_seeded(tok):
    model = random_model(tok)
    prompts = prompts_of(tok, LENGTHS)
    kw = {"max_new_tokens": 12, "temperature": 1.5, "top_k": 8}
    first = generate(model, prompts, tok, seed=3, **kw)
    assert first == generate(model, prompts, tok, seed=3, **kw)
    assert first != generate(model, prompts, tok, seed=4, **kw)
    assert first != generate(model, prompts, tok, max_new_tokens=12)  # not greedy


def test_bf16_generation_runs_and_restores_the_mode(tok):
    model = random_model(tok).train()
    out = generate(model, prompts_of(tok, LENGTHS), tok, max_new_tokens=6, precision="bf16")
    assert len(out) == len(LENGTHS) and all(len(o) <= 6 for o in out)
    assert model.training


def test_teacher_forcing_predicts_what_greedy_decoding_generates(tok):
    model = random_model(tok)
    prompts = prompts_of(tok, LENGTHS)
    gen = generate(model, prompts, tok, max_new_tokens=10, stop_at_turn_end=False)
    preds = greedy_predictions(model, [p + g for p, g in zip(prompts, gen, strict=True)])
    for p, g, pr in zip(prompts, gen, preds, strict=True):
        assert pr[len(p) - 1 : len(p) - 1 + len(g)] == g


def test_answer_takes_text_or_messages(tok):
    model = random_model(tok)
    text = answer(model, tok, "what is my balance", max_new_tokens=5)
    same = answer(model, tok, [{"role": "customer", "content": "What is my balance?"[:-1]}],
                  max_new_tokens=5)
    assert text == same and len(text.split()) <= 5


def test_detokenize_is_readable():
    words = "your checking account balance is $ 2 , 4 5 0 . 3 2 . you ' re welcome !"
    assert detokenize(words) == "Your checking account balance is $2,450.32. you're welcome!"


def test_cli_prints_one_answer_per_prompt(tiny_config, tmp_path, capsys):
    from bankllm.training import Trainer

    tiny_config.epochs = 1
    run = tmp_path / "runs" / "tiny"
    assert Trainer(tiny_config, run, show_progress=False).train() == 0
    prompts = ["How much money is in my savings account?", "What is the overdraft fee?"]
    code = main(["generate", *prompts, "--run", str(run), "--max-new-tokens", "8"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 2
    for line, prompt in zip(out, prompts, strict=True):
        assert line.startswith(f"{prompt} → ")
    assert main(["generate", "hi", "--run", str(run), "--temperature", "0.8", "--seed", "1"]) == 0


def test_cli_missing_run_is_one_error_line(tmp_path, capsys):
    code = main(["generate", "hello", "--run", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "no such run" in err
    assert err.count("\n") == 1


def test_forward_cached_without_a_mask_matches_a_full_forward():
    """A one-token step after a cached prefill must see every cached key."""
    import torch

    from bankllm.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        full, _ = model(idx)
        _, cache = model.forward_cached(idx[:, :8], torch.arange(8).expand(2, 8), None)
        step, _ = model.forward_cached(idx[:, 8:], torch.full((2, 1), 8), None, cache)
    assert torch.allclose(step, full[:, -1], atol=1e-5)
