"""BERT segment rows and GPT-1 transformed rows of fine-tuning examples, checked id by id."""

import numpy as np
import pytest

from lmjax.data.task_examples import TextExample
from lmjax.data.task_inputs import (
    EncoderFormat,
    GPT1Format,
    encoder_inputs,
    gpt1_inputs,
    truncated_pair,
)

CLS, SEP, PAD = 901, 902, 0
START, DELIM, EXTRACT = 911, 912, 913
ENCODER = EncoderFormat(cls_id=CLS, sep_id=SEP, pad_id=PAD, seq_len=10)
GPT1 = GPT1Format(start_id=START, delimiter_id=DELIM, extract_id=EXTRACT, pad_id=PAD, seq_len=10)


def test_truncated_pair_cuts_the_longer_text_from_its_end():
    assert truncated_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([1, 2, 3], [6, 7])
    assert truncated_pair([1, 2], [3, 4, 5], 3) == ([1, 2], [3])
    # equal lengths: the second loses the token first (BERT pops from b when len(a) == len(b))
    assert truncated_pair([1, 2, 3], [4, 5, 6], 4) == ([1, 2], [4, 5])


def test_encoder_single_and_pair_rows(word_tokenizer):
    single = TextExample(texts=("5 6 7",), label=1)
    pair = TextExample(texts=("5 6", "8 9 10"), label=0)
    arrays = encoder_inputs([single, pair], word_tokenizer, ENCODER)
    np.testing.assert_array_equal(arrays["inputs"][0], [CLS, 5, 6, 7, SEP, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(arrays["inputs"][1], [CLS, 5, 6, SEP, 8, 9, 10, SEP, 0, 0])
    np.testing.assert_array_equal(arrays["token_type_ids"][1], [0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(arrays["token_type_ids"][0], np.zeros(10))
    np.testing.assert_array_equal(arrays["attention_mask"][1], [1] * 8 + [0, 0])
    np.testing.assert_array_equal(arrays["labels"], [1, 0])
    assert arrays["labels"].dtype == np.int32
    np.testing.assert_array_equal(arrays["example_weights"], [1.0, 1.0])


def test_encoder_pair_longer_than_the_row_is_truncated(word_tokenizer):
    long_pair = TextExample(texts=(" ".join(map(str, range(10, 20))), "30 31"), label=0)
    row = encoder_inputs([long_pair], word_tokenizer, ENCODER)["inputs"][0]
    # 10 - 3 = 7 tokens of text: the longer first text keeps 5, the second both of its 2
    np.testing.assert_array_equal(row, [CLS, 10, 11, 12, 13, 14, SEP, 30, 31, SEP])


def test_encoder_multiple_choice_has_a_row_per_choice(word_tokenizer):
    example = TextExample(texts=("5 6",), choices=("7", "8 9", "10"), label=2)
    arrays = encoder_inputs([example, example], word_tokenizer, ENCODER)
    assert arrays["inputs"].shape == (2, 3, 10)
    np.testing.assert_array_equal(arrays["inputs"][0, 1, :7], [CLS, 5, 6, SEP, 8, 9, SEP])
    np.testing.assert_array_equal(arrays["token_type_ids"][0, 1, :7], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(arrays["labels"], [2, 2])


def test_regression_labels_are_float(word_tokenizer):
    arrays = encoder_inputs([TextExample(("5",), 3.5), TextExample(("6",), 1.0)],
                            word_tokenizer, ENCODER)
    assert arrays["labels"].dtype == np.float32
    np.testing.assert_allclose(arrays["labels"], [3.5, 1.0])


def test_gpt1_classification_and_entailment_transforms(word_tokenizer):
    single = TextExample(texts=("5 6 7",), label=1)
    pair = TextExample(texts=("5 6", "8"), label=0)
    arrays = gpt1_inputs([single, pair], word_tokenizer, GPT1)
    np.testing.assert_array_equal(arrays["inputs"][0, :5], [START, 5, 6, 7, EXTRACT])
    np.testing.assert_array_equal(arrays["inputs"][1, :6], [START, 5, 6, DELIM, 8, EXTRACT])
    assert "token_type_ids" not in arrays
    # LM targets: the next token wherever the next token is real (the reference's M[:, 1:])
    np.testing.assert_array_equal(arrays["lm_targets"][1, :5], [5, 6, DELIM, 8, EXTRACT])
    np.testing.assert_array_equal(arrays["lm_weights"][1], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def test_gpt1_similarity_feeds_both_orderings(word_tokenizer):
    arrays = gpt1_inputs([TextExample(texts=("5 6", "8"), label=1)], word_tokenizer, GPT1,
                         both_orderings=True)
    assert arrays["inputs"].shape == (1, 2, 10)
    np.testing.assert_array_equal(arrays["inputs"][0, 0, :6], [START, 5, 6, DELIM, 8, EXTRACT])
    np.testing.assert_array_equal(arrays["inputs"][0, 1, :6], [START, 8, DELIM, 5, 6, EXTRACT])
    with pytest.raises(ValueError, match="sentence-pair"):
        gpt1_inputs([TextExample(texts=("5",), label=1)], word_tokenizer, GPT1,
                    both_orderings=True)


def test_gpt1_multiple_choice_rows_and_truncation(word_tokenizer):
    context = " ".join(map(str, range(10, 22)))  # 12 tokens: more than the row holds
    example = TextExample(texts=(context,), choices=("30", "31 32"), label=1)
    arrays = gpt1_inputs([example], word_tokenizer, GPT1)
    assert arrays["inputs"].shape == (1, 2, 10)
    row = arrays["inputs"][0, 1]
    assert row[0] == START and row[-1] == EXTRACT and DELIM in row
    np.testing.assert_array_equal(row[-4:], [DELIM, 31, 32, EXTRACT])  # the choice survives


def test_mismatched_choice_counts_are_an_error(word_tokenizer):
    examples = [TextExample(("5",), 0, choices=("6", "7")), TextExample(("5",), 0, choices=("6",))]
    with pytest.raises(ValueError, match="numbers of choices"):
        encoder_inputs(examples, word_tokenizer, ENCODER)
    with pytest.raises(ValueError, match="not an index"):
        TextExample(("5",), 3, choices=("6", "7"))
