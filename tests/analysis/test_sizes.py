"""analysis.sizes: the closed forms equal what the model counts from its own modules."""

from __future__ import annotations

import pytest

from analysis.sizes import (
    PAPER_HEAD_DIM,
    PAPER_VOCAB_SIZE,
    flops_per_token,
    matmul_param_count,
    paper_param_count,
    param_count,
    training_flops,
)


def test_paper_count_at_depth_4_and_40():
    assert paper_param_count(4) == 19_534_080  # the sweep's params column at n_layers 4
    assert paper_param_count(40) == param_count(2560, 40, 32000)


# Shapes of the paper (width 64 n, n layers) and of the offline studies (width and depth apart).
SHAPES = [(64 * n, n, 32000) for n in (1, 4, 7)] + [(128, 1, 2048), (192, 2, 2048), (64, 3, 50)]


@pytest.mark.parametrize("width, layers, vocab", SHAPES)
def test_closed_forms_are_the_models_own_counts(width, layers, vocab):
    torch = pytest.importorskip("torch")
    from modeling_l2l import L2LConfig, L2LForCausalLM

    config = L2LConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=width // 64,
                       vocab_size=vocab, max_position_embeddings=128)
    with torch.device("meta"):
        model = L2LForCausalLM(config)
    assert model.num_parameters() == param_count(width, layers, vocab)
    assert model.num_matmul_params() == matmul_param_count(width, layers, vocab)
    for seq_len in (None, 37):
        expected = flops_per_token(matmul_param_count(width, layers, vocab), layers, width,
                                   seq_len or 128)
        assert model.num_flops_per_token(seq_len) == expected


def test_the_models_paper_constants_are_these():
    pytest.importorskip("torch")
    from modeling_l2l import configuration_l2l

    assert configuration_l2l.PAPER_HEAD_DIM == PAPER_HEAD_DIM
    assert configuration_l2l.PAPER_VOCAB_SIZE == PAPER_VOCAB_SIZE


def test_training_flops_counts_every_token_of_every_step():
    width, layers, seq_len, tokens = 256, 4, 512, 1024 * 512 * 10
    per_token = 6 * matmul_param_count(width, layers) + 12 * layers * width * seq_len
    assert training_flops(width, layers, tokens, seq_len) == per_token * tokens
    # above the planning convention C = 6 N D (the head is counted, the attention too)
    assert training_flops(width, layers, tokens, seq_len) > 6 * matmul_param_count(width, layers) * tokens


def test_importing_sizes_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; import analysis.sizes as s; "
            "print(s.paper_param_count(4))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "19534080"
