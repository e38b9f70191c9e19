"""GPT presets: parameter counts (jax.eval_shape, nothing allocated) against Hugging Face and the
GPT-3 paper, and the architectural switches of each preset."""

import dataclasses

import pytest

from lmjax.models import gpt

# Parameter counts of Hugging Face models built from the corresponding configs (GPT2LMHeadModel /
# OpenAIGPTLMHeadModel, tied head counted once), computed with transformers 5.23 on torch's 'meta'
# device: e.g. sum(p.numel() for p in GPT2LMHeadModel(GPT2Config(n_layer=24, n_embd=1024,
# n_head=16)).parameters()) and OpenAIGPTLMHeadModel(OpenAIGPTConfig()) for openai-gpt.
HF_COUNTS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "gpt1": 116_534_784,  # openai-gpt
}


@pytest.mark.parametrize("preset", sorted(HF_COUNTS))
def test_gpt1_gpt2_counts_equal_hugging_face(preset):
    assert gpt.count_params(gpt.PRESETS[preset]) == HF_COUNTS[preset]


def test_count_does_not_depend_on_layout():
    config = gpt.PRESETS["gpt2"]
    unscanned = dataclasses.replace(config, scan_layers=False)
    assert gpt.count_params(unscanned) == gpt.count_params(config) == 124_439_808


@pytest.mark.parametrize("preset", sorted(gpt.GPT3_PAPER_PARAMS))
def test_gpt3_counts_within_three_percent_of_the_paper(preset):
    count = gpt.count_params(gpt.PRESETS[preset])
    paper = gpt.GPT3_PAPER_PARAMS[preset]
    assert abs(count - paper) / paper < 0.03, (preset, count, paper)


def test_gpt3_shapes_follow_table_2_1():
    table = {  # name: (layers, d_model, d_head)
        "gpt3-small": (12, 768, 64),
        "gpt3-medium": (24, 1024, 64),
        "gpt3-large": (24, 1536, 96),
        "gpt3-xl": (24, 2048, 128),
        "gpt3-2.7b": (32, 2560, 80),
        "gpt3-6.7b": (32, 4096, 128),
        "gpt3-13b": (40, 5120, 128),  # the paper's 5140 is not 40 x 128
        "gpt3-175b": (96, 12288, 128),
    }
    for name, (layers, width, head) in table.items():
        config = gpt.PRESETS[name]
        assert (config.num_layers, config.embed_dim, config.head_dim) == (layers, width, head)
        assert config.mlp_dim == 4 * width and config.max_len == 2048
        assert config.attention_pattern == "alternating_local" and config.norm == "pre"


def test_gpt1_and_gpt2_architecture_switches():
    gpt1 = gpt.PRESETS["gpt1"]
    assert (gpt1.norm, gpt1.final_norm, gpt1.activation) == ("post", False, "gelu_tanh")
    assert (gpt1.vocab_size, gpt1.max_len, gpt1.position_init_std) == (40478, 512, 0.02)
    assert gpt.GPT1_VOCAB_WITH_SPECIALS == 40478 + len(gpt.GPT1_SPECIAL_TOKENS) == 40481
    assert gpt.GPT1_SPECIAL_TOKENS == ("_start_", "_delimiter_", "_classify_")
    for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
        config = gpt.PRESETS[name]
        assert (config.norm, config.final_norm, config.vocab_size, config.max_len) == (
            "pre",
            True,
            50257,
            1024,
        )
        assert config.position_init_std == 0.01 and config.layer_norm_eps == 1e-5
    assert gpt.PRESETS["gpt3-tiny"].attention_pattern == "alternating_local"
    assert gpt.PRESETS["gpt1-tiny"].norm == "post"
