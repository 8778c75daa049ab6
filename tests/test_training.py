import math
import random

import torch

from bankllm.checkpoints import load_run, read_metrics
from bankllm.data import collate, encode_corpus
from bankllm.model import GPT, GPTConfig
from bankllm.steps import accumulate_gradients, lr_at
from bankllm.tokenizer import Tokenizer
from bankllm.training import Trainer
from tests.conftest import make_conversations


def _setup(n=32, seed=0):
    convs = make_conversations(n, seed=seed)
    tok = Tokenizer.train(m["content"] for c in convs for m in c["messages"])
    enc = encode_corpus(convs, tok, block_size=64)
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=len(tok), block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    )
    return tok, enc, model


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_accumulating_8_micro_batches_of_4_gives_the_gradient_of_one_batch_of_32():
    tok, enc, model = _setup()
    batch = list(range(32))
    assert len(set(enc.lengths)) > 3  # unequal lengths: the case the chapter gets wrong
    accumulate_gradients(model, enc, batch, 32, tok.pad_id, torch.device("cpu"), "fp32")
    full = _grads(model).clone()
    model.zero_grad()
    accumulate_gradients(model, enc, batch, 4, tok.pad_id, torch.device("cpu"), "fp32")
    assert (full - _grads(model)).abs().max().item() <= 1e-5


def test_the_chapters_mean_per_micro_batch_divided_by_8_gives_another_gradient():
    tok, enc, model = _setup()
    batch = list(range(32))
    accumulate_gradients(model, enc, batch, 32, tok.pad_id, torch.device("cpu"), "fp32")
    full = _grads(model).clone()
    model.zero_grad()
    for start in range(0, 32, 4):  # the chapter: loss = mean(micro-batch) / accumulation_steps
        _, loss = model(*collate(enc, batch[start : start + 4], tok.pad_id))
        (loss / 8).backward()
    assert (full - _grads(model)).abs().max().item() > 1e-4


def test_untrained_loss_is_close_to_ln_vocab():
    tok, enc, model = _setup()
    model.eval()
    with torch.no_grad():
        _, loss = model(*collate(enc, list(range(16)), tok.pad_id))
    assert abs(loss.item() - math.log(len(tok))) < 0.1 * math.log(len(tok))


def test_cosine_schedule_warms_up_decays_and_keeps_its_floor(tiny_config):
    cfg = tiny_config
    cfg.warmup_steps = 2
    lrs = [lr_at(s, 20, cfg) for s in range(21)]
    assert lrs[0] < lrs[1] <= cfg.lr
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert math.isclose(lrs[20], cfg.min_lr)


def test_tiny_run_lowers_the_loss_and_writes_a_valid_run_directory(tiny_config, tmp_path):
    tiny_config.epochs = 3
    run_dir = tmp_path / "runs" / "tiny"
    assert Trainer(tiny_config, run_dir, show_progress=False).train() == 0
    metrics = read_metrics(run_dir)  # validates against the schema
    epochs = metrics["epochs"]
    assert metrics["status"] == "completed" and len(epochs) == 3
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"] < metrics["initial_loss"]
    assert metrics["best_val_loss"] == min(e["val_loss"] for e in epochs)
    assert len(metrics["steps"]) == 3 * metrics["steps_per_epoch"]
    for name in (
        "config.json",
        "tokenizer.json",
        "split.json",
        "best.safetensors",
        "best.json",
        "state.pt",
        "metrics.csv",
    ):
        assert (run_dir / name).exists(), name
    assert (tmp_path / "runs" / "latest").resolve() == run_dir.resolve()
    run = load_run(run_dir)
    assert len(run.split.train) + len(run.split.val) == 60
    assert run.load_model().training is False
    # each epoch's losses per conversation, in split order, add up to its mean losses
    for part, mean in (("val", "val_loss"), ("train_eval", "train_eval_loss")):
        tokens = metrics[f"{part}_tokens"]
        assert len(tokens) == len(getattr(run.split, part)) and min(tokens) > 0
        for e in epochs:
            sums = e[f"{part}_loss_sums"]
            assert len(sums) == len(tokens) and len(set(sums)) > 1
            assert math.isclose(sum(sums) / sum(tokens), e[mean], rel_tol=1e-5)


def test_same_seed_gives_identical_metrics(tiny_config, tmp_path):
    tiny_config.dropout = 0.1  # dropout draws random numbers too

    def losses(name):
        Trainer(tiny_config, tmp_path / name, show_progress=False).train()
        m = read_metrics(tmp_path / name)
        return [s["loss"] for s in m["steps"]], [e["val_loss"] for e in m["epochs"]]

    random.seed(123)  # global state before the run must not matter
    first = losses("a")
    torch.manual_seed(999)
    assert losses("b") == first
