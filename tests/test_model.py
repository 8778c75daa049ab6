import math

import pytest
import torch
import torch.nn.functional as F

from bankllm.model import (
    DROPOUT_RESOLUTION,
    GPT,
    GPTConfig,
    add_dropout,
    causal_attention,
    dropout_keep_scale,
    dropout_mask,
)

N = 1 << 20  # mask elements per statistical check: the drop share's sd is <= 5e-4


def _mask(p: float, seed: int = 0, shape: tuple[int, ...] = (N,), dtype=torch.float32):
    torch.manual_seed(seed)
    return dropout_mask(torch.Size(shape), p, dtype, torch.device("cpu"))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_dropout_mask_drops_a_share_p_in_each_of_the_four_words_of_a_draw(p):
    mask = _mask(p)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    sd = math.sqrt(p * (1 - p) / (N // 4))
    for lane in range(4):  # each 64-bit draw feeds four elements: every one must be random
        dropped = 1.0 - mask[lane::4].mean().item()
        assert abs(dropped - p) < 5 * sd, (lane, dropped)


def test_dropout_mask_is_all_ones_at_p_0_and_keeps_nothing_correlated():
    assert bool(_mask(0.0).eq(1.0).all())
    mask = _mask(0.5, shape=(N // 2, 2))
    agree = mask[:, 0].eq(mask[:, 1]).float().mean().item()  # neighbours independent
    assert abs(agree - 0.5) < 0.005


def test_dropout_keep_scale_makes_the_expectation_exact():
    for p in (0.1, 0.3, 0.999999):
        dropped = round(p * DROPOUT_RESOLUTION)
        keep = 1 - min(dropped, DROPOUT_RESOLUTION - 1) / DROPOUT_RESOLUTION
        assert keep * dropout_keep_scale(p) == pytest.approx(1.0, abs=1e-12)
    assert abs(dropout_keep_scale(0.1) - 1 / 0.9) < 1e-4


def test_dropout_mask_is_reproducible_from_the_seed():
    assert torch.equal(_mask(0.1, seed=3, shape=(7, 33)), _mask(0.1, seed=3, shape=(7, 33)))
    assert not torch.equal(_mask(0.1, seed=3), _mask(0.1, seed=4))


def test_add_dropout_adds_the_masked_scaled_branch_in_the_residuals_dtype():
    x = torch.randn(4, 9, 16)
    y = torch.randn(4, 9, 16).bfloat16()
    torch.manual_seed(5)
    out = add_dropout(x, y, 0.1, training=True)
    torch.manual_seed(5)
    mask = dropout_mask(y.shape, 0.1, torch.float32, y.device)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x + y.float() * mask * dropout_keep_scale(0.1))
    assert torch.equal(add_dropout(x, y, 0.1, training=False), x + y)


def test_written_out_causal_attention_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 11, 8) for _ in range(3))
    bias = torch.full((11, 11), float("-inf")).triu(1)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention(q, k, v, bias), expected)


def test_training_mode_dropout_changes_the_loss_and_eval_mode_is_deterministic():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(0, 50, (2, 16))
    model.train()
    assert model(idx, idx)[1].item() != model(idx, idx)[1].item()
    model.eval()
    assert model(idx, idx)[1].item() == model(idx, idx)[1].item()


def test_continuation_logprobs_sum_the_teacher_forced_log_softmax_whatever_the_padding():
    import torch

    from bankllm.evaluation import continuation_logprobs
    from bankllm.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8,
                          dropout=0.0)).eval()
    contexts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [2]]
    continuations = [[4], [10, 3], [5, 6, 7]]
    got = continuation_logprobs(model, contexts, continuations, pad_id=0, batch_size=2)
    for ctx, cont, value in zip(contexts, continuations, got, strict=True):
        seq = ([*ctx, *cont])[-7:]  # block_size + 1: the oldest context tokens go
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq[:-1]]))[0][0].float(), dim=-1)
        want = sum(logp[len(seq) - 1 - len(cont) + k, t].item() for k, t in enumerate(cont))
        assert abs(value - want) < 1e-5
    with pytest.raises(ValueError, match="continuation"):
        continuation_logprobs(model, [[1]], [[]], pad_id=0)
