"""The GPT-3 few-shot harness on a tiny random GPT with real tasks from the embedded corpus.

Likelihoods are checked against a plain forward pass written here, prompts against the protocol
(seeded, no leakage of the test example, truncation from the front).
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data.package_passages import package_of
from lmjax.data.python_docs import module_documentation_text, stdlib_source_files
from lmjax.data.task_examples import TextExample
from lmjax.data.tokenizers import SentencePieceOptions, trained_sentencepiece_tokenizer
from lmjax.decoding.beam_search import beam_search
from lmjax.decoding.text import left_padded_prompts
from lmjax.eval.few_shot import (
    bucket_length,
    completion_log_likelihoods,
    few_shot_table,
    format_table,
    free_form_answers,
    free_form_exact_match,
    multiple_choice_scores,
)
from lmjax.eval.few_shot_tasks import (
    FreeFormExample,
    FreeFormTask,
    MultipleChoiceTask,
    continuation_choice_task,
    demonstration_indices,
    fitted_prompt,
    last_word_task,
    package_choice_task,
    prompt_text,
)
from lmjax.models import gpt

MAX_LEN = 128
PACKAGES = ("http", "json", "urllib", "wsgiref")


@pytest.fixture(scope="module")
def documents():
    """``(source, text)`` corpus documents of four small standard-library packages."""
    docs = []
    for name, path in stdlib_source_files():
        if package_of(name) in PACKAGES:
            module = name[len("stdlib/"):-len(".py")].replace("/__init__", "").replace("/", ".")
            with open(path, "rb") as f:
                text = module_documentation_text(f.read(), module)
            if text:
                docs.append((name, text))
    assert len(docs) >= 15
    return docs


@pytest.fixture(scope="module")
def tokenizer(documents):
    return trained_sentencepiece_tokenizer(
        [text for _, text in documents], SentencePieceOptions(vocab_size=512)
    )


@pytest.fixture(scope="module")
def tasks(documents):
    return (
        package_choice_task(documents, num_packages=3, passage_words=8),
        dataclasses.replace(last_word_task(documents, context_words=8), max_answer_tokens=4),
    )


@functools.lru_cache(maxsize=None)
def _model_and_params(vocab_size):
    """A tiny GPT with random parameters drawn in numpy (no init to compile): kernels and
    embeddings N(0, 0.3) (larger than GPT's 0.02, so continuations vary), norms 1, biases 0."""
    config = dataclasses.replace(
        gpt.PRESETS["tiny"], vocab_size=vocab_size, max_len=MAX_LEN, num_layers=2, embed_dim=32,
        num_heads=4, mlp_dim=64,
    )
    model = gpt.GPT(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    rng = np.random.default_rng(0)


    def drawn(path, shape):
        name = path[-1].key
        if name in ("scale", "bias"):
            return jnp.full(shape.shape, 1.0 if name == "scale" else 0.0, jnp.float32)
        return jnp.asarray(0.3 * rng.standard_normal(shape.shape), jnp.float32)

    return model, jax.tree_util.tree_map_with_path(drawn, nn.meta.unbox(shapes["params"]))


@pytest.fixture(scope="module")
def model_and_params(tokenizer):
    return _model_and_params(tokenizer.vocab_size)


def _direct_log_likelihood(model, params, context_ids, completion_ids):
    """log P(completion | context) from one unbatched forward pass, float64."""
    tokens = np.zeros((1, MAX_LEN), np.int32)  # right-padded; causal, so the pads change nothing
    row = list(context_ids) + list(completion_ids)
    tokens[0, : len(row)] = row
    logits = np.asarray(_forward(model)(params, jnp.asarray(tokens))[0], np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    start = len(context_ids)
    return sum(log_probs[t - 1, row[t]] for t in range(start, len(row)))


@functools.lru_cache(maxsize=None)
def _forward(model):
    return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens)["logits"])


def test_table_has_both_formats_and_every_shot_column(model_and_params, tokenizer, tasks):
    model, params = model_and_params
    rows = few_shot_table(
        model, params, tokenizer, tasks, shots=(0, 1, 3), num_examples=4, seed=0, batch_size=8
    )
    assert {row.format for row in rows} == {"multiple choice", "free-form"}
    assert [row.metric for row in rows] == [
        "accuracy (sum log-lik)", "accuracy (per-token)", "accuracy (unconditional)",
        "exact match",
    ]
    for row in rows:
        assert sorted(row.values) == [0, 1, 3] and row.num_examples == 4
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in row.values.values())
    # 3 demonstrations of ~60 tokens cannot fit in 128 positions: the table says so.
    assert any("3-shot" in note and "dropped" in note for row in rows for note in row.notes)
    table = format_table(rows)
    header = table.splitlines()[0].split()
    assert header == ["task", "format", "metric", "n", "0-shot", "1-shot", "3-shot"]
    assert "package" in table and "last word" in table and "note:" in table


def test_choice_scores_match_a_direct_forward_pass(model_and_params, tokenizer, tasks):
    model, params = model_and_params
    task = tasks[0]
    examples = task.test[:2]
    contexts = [
        prompt_text(task, [task.train[0]], examples[0]),  # a one-shot context
        task.format_example(examples[1], with_answer=False),
    ]
    # Choices of different token lengths, so the per-token scores rank differently from sums.
    choices = [(" json", " wsgiref handlers", " http"), (" urllib", " json")]
    scores = multiple_choice_scores(
        model, params, tokenizer, contexts, choices, "Answer:", batch_size=8
    )
    answer_ids = tokenizer.encode("Answer:")
    for n, (context, options) in enumerate(zip(contexts, choices)):
        for j, choice in enumerate(options):
            ids = tokenizer.encode(choice)
            direct = _direct_log_likelihood(model, params, tokenizer.encode(context), ids)
            unconditional = _direct_log_likelihood(model, params, answer_ids, ids)
            np.testing.assert_allclose(scores.log_likelihood[n, j], direct, rtol=1e-4)
            assert scores.num_tokens[n, j] == len(ids)
            np.testing.assert_allclose(
                scores.normalised("per_token")[n, j], direct / len(ids), rtol=1e-4
            )
            np.testing.assert_allclose(
                scores.normalised("unconditional")[n, j], direct - unconditional, rtol=1e-4,
                atol=1e-4,
            )
    assert scores.log_likelihood[1, 2] == -np.inf  # the second example has two choices
    assert np.argmax(scores.normalised("sum")[1]) in (0, 1)
    with pytest.raises(ValueError, match="normalisation="):
        scores.normalised("mean")


def test_likelihoods_do_not_depend_on_batch_company(model_and_params):
    model, params = model_and_params
    rng = np.random.default_rng(0)
    contexts = [list(rng.integers(4, 500, size=n)) for n in (3, 20, 7, 40, 11)]
    completions = [list(rng.integers(4, 500, size=n)) for n in (2, 1, 5, 3, 4)]
    together, lengths = completion_log_likelihoods(
        model, params, contexts, completions, batch_size=8
    )
    np.testing.assert_array_equal(lengths, [2, 1, 5, 3, 4])
    for i in (0, 3):  # alone in a batch of filler rows, and padded to another bucket
        alone, _ = completion_log_likelihoods(
            model, params, [contexts[i]], [completions[i]], batch_size=8
        )
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-5)
    direct = _direct_log_likelihood(model, params, contexts[3], completions[3])
    np.testing.assert_allclose(together[3], direct, rtol=1e-4)
    with pytest.raises(ValueError, match="longer than the model's max_len"):
        completion_log_likelihoods(model, params, [[5] * MAX_LEN], [[6]])


def _dev_only_task(size=6):
    examples = tuple(
        FreeFormExample(prompt=f"Question {i}:", answers=(f"answer{i}",), uid=f"q{i}")
        for i in range(size)
    )
    return FreeFormTask(name="dev only", train=(), test=examples)


def test_prompts_are_seeded_and_never_show_the_test_example():
    task = _dev_only_task()
    for index in range(len(task.test)):
        everything = demonstration_indices(task, index, len(task.test) - 1, seed=3)
        assert sorted(everything) == [i for i in range(len(task.test)) if i != index]
        assert demonstration_indices(task, index, 2, seed=3) == everything[:2]
        assert demonstration_indices(task, index, 5, seed=3) == everything
        text = prompt_text(task, [task.test[i] for i in everything], task.test[index])
        assert text.count(f"answer{index}") == 0 and text.endswith(f"Question {index}:")
    draws = {demonstration_indices(task, 0, 5, seed=s) for s in range(6)}
    assert len(draws) > 1, "the seed changes the draw"
    with pytest.raises(ValueError, match="at most 5 shots"):
        demonstration_indices(task, 0, 6, seed=0)


def test_truncation_drops_demonstrations_from_the_front(tokenizer, tasks):
    task = tasks[0]
    full = fitted_prompt(task, tokenizer, 0, 4, seed=1, max_tokens=None)
    assert len(full.demonstrations) == 4 and full.dropped == 0
    test_part = task.format_example(task.test[0], with_answer=False)
    alone = len(tokenizer.encode(test_part))
    one_demo = len(tokenizer.encode(prompt_text(
        task, [task.train[full.demonstrations[-1]]], task.test[0]
    )))
    fitted = fitted_prompt(task, tokenizer, 0, 4, seed=1, max_tokens=one_demo + 5)
    assert len(tokenizer.encode(fitted.text)) <= one_demo + 5
    assert fitted.demonstrations == full.demonstrations[-1:] and fitted.dropped == 3
    assert fitted.text.endswith(task.separator + test_part), "the test example is whole"
    assert fitted_prompt(task, tokenizer, 0, 4, seed=1, max_tokens=alone).demonstrations == ()
    with pytest.raises(ValueError, match="alone takes"):
        fitted_prompt(task, tokenizer, 0, 4, seed=1, max_tokens=alone - 1)


def test_package_task_is_labelled_and_held_out_by_module(documents, tasks):
    task = tasks[0]
    assert task.format == "multiple choice"
    packages = [choice.strip() for choice in task.test[0].choices]
    assert len(packages) == 3 and set(packages) <= set(PACKAGES)
    train_modules = {e.uid.split("#")[0] for e in task.train}
    test_modules = {e.uid.split("#")[0] for e in task.test}
    assert train_modules and test_modules and not train_modules & test_modules
    for example in task.train + task.test:
        package = packages[example.label]
        assert package_of(example.uid.split("#")[0]) == package
        assert package not in example.texts[0].lower(), "the label is not spelled out"
        assert example.texts[0].startswith("Passage: ") and example.texts[0].endswith("Package:")
        assert "\n" not in example.texts[0][: -len("\nPackage:")]
    assert task.format_example(task.test[0], True).endswith(":" + task.test[0].choices[
        task.test[0].label])


def test_continuation_task_offers_the_true_next_passage(documents):
    task = continuation_choice_task(documents, passage_words=6, passages_per_module=3)
    assert task.format == "multiple choice" and task.train and task.test
    bodies = {source: " ".join(text.split("\n", 1)[1].split()) for source, text in documents}
    for example in task.train + task.test:
        source = example.uid.split("#")[0]
        context = example.texts[0][len("Passage: "):-len("\nContinuation:")]
        right = example.choices[example.label]
        assert len(example.choices) == 4 and right.startswith(" ")
        assert context + right in bodies[source], "the right choice follows the context"
        for j, wrong in enumerate(example.choices):
            if j != example.label:
                assert context + wrong not in bodies[source]


def test_last_word_task_targets_real_sentence_ends(documents, tasks):
    task = tasks[1]
    assert task.format == "free-form" and task.train and task.test
    texts = dict(documents)
    for example in task.train + task.test:
        source, position = example.uid.split("@")
        words = texts[source].split("\n", 1)[1].split()
        assert words[int(position)] == example.answers[0] + "."
        assert example.prompt == (
            f"Passage: {' '.join(words[int(position) - 8:int(position)])} ___.\nLast word:"
        )
    assert not {e.uid.split("@")[0] for e in task.train} & {e.uid.split("@")[0] for e in task.test}


def test_exact_match_normalises_answers():
    assert free_form_exact_match("  The  Format. ", ["format"]) == 1.0
    assert free_form_exact_match("a URL!", ["path", "url"]) == 1.0
    assert free_form_exact_match("urls", ["url"]) == 0.0


def test_bucket_lengths():
    assert [bucket_length(n) for n in (1, 32, 33, 100)] == [32, 32, 64, 128]
    assert bucket_length(100, limit=125) == 125
    with pytest.raises(ValueError, match="does not fit"):
        bucket_length(130, limit=128)


def test_bad_tasks_are_errors():
    example = TextExample(texts=("Q:",), label=0, choices=(" a", " b"))
    with pytest.raises(ValueError, match="has no test examples"):
        MultipleChoiceTask(name="empty", train=(example,), test=())
    with pytest.raises(ValueError, match="needs texts=\\(context,\\) and choices"):
        MultipleChoiceTask(name="x", train=(), test=(TextExample(texts=("Q:",), label=0),))
    with pytest.raises(ValueError, match="expected FreeFormExample"):
        FreeFormTask(name="x", train=(), test=(example,))
    with pytest.raises(ValueError, match="single-line"):
        FreeFormExample(prompt="Q:", answers=("two\nlines",))
    with pytest.raises(ValueError, match="num_packages=1 must be >= 2"):
        package_choice_task([], num_packages=1)


def test_free_form_answers_are_the_best_beam_cut_at_the_first_newline(
    model_and_params, tokenizer, tasks
):
    model, params = model_and_params
    task = tasks[1]
    limit = MAX_LEN - 4 + 1  # room for 4 new tokens
    prompts = [fitted_prompt(task, tokenizer, i, 2, 0, limit).text for i in range(3)]
    answers = free_form_answers(
        model, params, tokenizer, prompts, max_new_tokens=4, batch_size=8
    )
    # The same beams without the harness: the prompts in their own order, the last one
    # repeated to fill the batch, left-padded to the harness's bucket (so no new compile;
    # padding invariance itself is tested in tests/decoding/test_beam_search.py).
    ids = [tokenizer.encode(p) for p in prompts]
    tokens, mask = left_padded_prompts(ids + [ids[-1]] * 5, tokenizer.pad_id)
    width = bucket_length(tokens.shape[1], limit)
    tokens = np.pad(tokens, ((0, 0), (width - tokens.shape[1], 0)))
    mask = np.pad(mask, ((0, 0), (width - mask.shape[1], 0)))
    beams, _ = beam_search(
        model, params, tokens, mask, beam_size=4, max_new_tokens=4, length_penalty=0.6,
        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
    )
    texts = []
    for row in np.asarray(beams[:3, 0, width:]).tolist():
        if tokenizer.eos_id in row:
            row = row[: row.index(tokenizer.eos_id)]
        texts.append(tokenizer.decode(row))
    assert answers == [text.split("\n")[0].strip() for text in texts]
    assert any(answers), "some answer is non-empty, so the comparison means something"
