"""Text-to-text task mixing (lmjax.data.task_mixture): rates against the seqio formula (T5
proportional with a cap, mT5's α = 0.3), empirical task frequencies (5-sigma bounds), prefixes,
epoch order, exact resumption, and tokenized seq2seq batches."""

import itertools

import numpy as np
import pytest

from lmjax.data import Tokenizer
from lmjax.data.task_mixture import (
    MT5_ALPHA,
    MixtureBatches,
    TaskMixture,
    TextTask,
    mixing_rates,
    rate_num_examples,
    text_to_text_batch,
)

PAD, EOS = 0, 3


class NumberTokenizer(Tokenizer):
    """Each whitespace-separated word ``"<n>"`` (or ``"<n>:"``, a task prefix) is id ``n``;
    pad 0, EOS 3."""

    def encode(self, text):
        return [int(word.rstrip(":")) for word in text.split()]

    def decode(self, ids):
        return " ".join(str(i) for i in ids)

    def id_of(self, piece):
        raise KeyError(piece)

    def id_to_piece(self, piece_id):
        return str(piece_id)

    vocab_size = 1000
    pad_id = PAD
    bos_id = None
    eos_id = EOS
    unk_id = None


def _pairs(name, n):
    return [(f"{name} input {i}", f"{name} target {i}") for i in range(n)]


def test_rates_follow_the_seqio_formula():
    sizes = [1_000_000, 50_000, 300]
    # T5 examples-proportional mixing with K = 2**16: min(n, K) / sum.
    capped = np.minimum(sizes, 2**16)
    np.testing.assert_allclose(mixing_rates(sizes, maximum=2**16), capped / capped.sum())
    # mT5: p ∝ n**0.3 (temperature 1/0.3).
    powered = np.array(sizes, float) ** 0.3
    np.testing.assert_allclose(
        mixing_rates(sizes, temperature=1 / MT5_ALPHA), powered / powered.sum(), rtol=1e-12
    )
    assert rate_num_examples(200, maximum=100, temperature=2.0, scale=3.0) == pytest.approx(10.0)
    np.testing.assert_allclose(mixing_rates(sizes), np.array(sizes) / sum(sizes))
    with pytest.raises(ValueError, match="temperature"):
        mixing_rates(sizes, temperature=0.0)
    with pytest.raises(ValueError, match="positive size"):
        mixing_rates([0, 0])


def test_task_frequencies_match_the_rates_and_prefixes_are_applied():
    tasks = [
        TextTask("big", "translate", _pairs("big", 900)),
        TextTask("mid", "summarize", _pairs("mid", 90)),
        TextTask("small", "", _pairs("small", 9)),
    ]
    mixture = TaskMixture(tasks, temperature=1 / MT5_ALPHA, seed=7)
    draws = 20000
    examples = list(itertools.islice(mixture, draws))
    counts = np.array([sum(e.task == t.name for e in examples) for t in tasks])
    rates = np.array([900, 90, 9], float) ** 0.3
    rates /= rates.sum()
    np.testing.assert_allclose(mixture.rates, rates, rtol=1e-12)
    sigma = np.sqrt(draws * rates * (1 - rates))
    assert (np.abs(counts - draws * rates) < 5 * sigma).all(), (counts, draws * rates)
    for example in examples[:200]:
        number = example.inputs.split()[-1]
        if example.task == "big":
            assert example.inputs == f"translate: big input {number}"
        elif example.task == "small":  # empty prefix: the input unchanged
            assert example.inputs == f"small input {number}"
        assert example.targets == f"{example.task} target {number}"


def test_list_tasks_visit_every_example_once_per_epoch_in_a_new_order():
    mixture = TaskMixture([TextTask("a", "a", _pairs("a", 50))], seed=3)
    first, second = ([next(mixture).targets for _ in range(50)] for _ in range(2))
    assert sorted(first) == sorted(second) == sorted(t for _, t in _pairs("a", 50))
    assert first != second and first != [t for _, t in _pairs("a", 50)]


def _tasks():
    def stream():  # a restartable stream of 7 examples per pass
        return iter(_pairs("stream", 7))

    return [
        TextTask("list", "l", _pairs("list", 13)),
        TextTask("stream", "s", stream, num_examples=7),
    ]


def test_restore_gives_the_same_stream_in_a_new_mixture_and_after_going_back():
    reference = list(itertools.islice(TaskMixture(_tasks(), seed=11), 120))
    mixture = TaskMixture(_tasks(), seed=11)
    head = list(itertools.islice(mixture, 45))
    state = mixture.state()
    rest = list(itertools.islice(mixture, 75))
    assert head + rest == reference
    fresh = TaskMixture(_tasks(), seed=11)
    fresh.restore(state)
    assert list(itertools.islice(fresh, 75)) == rest
    mixture.restore(state)  # going back in the same mixture
    assert list(itertools.islice(mixture, 75)) == rest
    assert state == {"seed": 11, "examples": 45, "tasks": ["list", "stream"],
                     "positions": state["positions"]}
    assert sum(e * n + o for (e, o), n in zip(state["positions"], (13, 7))) == 45
    with pytest.raises(ValueError, match="shuffle seed"):
        TaskMixture(_tasks(), seed=12).restore(state)
    with pytest.raises(ValueError, match="same tasks"):
        TaskMixture(_tasks()[::-1], seed=11).restore(state)


def test_one_shot_iterators_resume_forward_only_and_end_the_mixture():
    def mixture():
        return TaskMixture([TextTask("once", "", iter(_pairs("once", 5)), num_examples=5)])

    first = mixture()
    list(itertools.islice(first, 2))
    state = first.state()
    later = mixture()
    later.restore(state)  # a fresh iterator skips forward
    assert [e.targets for e in later] == [f"once target {i}" for i in range(2, 5)]
    with pytest.raises(ValueError, match="one-shot iterator"):
        later.restore(state)


def test_bad_tasks_raise_clear_errors():
    with pytest.raises(ValueError, match="num_examples"):
        TextTask("t", "", lambda: iter([]))
    with pytest.raises(ValueError, match="no examples"):
        TextTask("t", "", [])
    with pytest.raises(ValueError, match="distinct"):
        TaskMixture([TextTask("t", "", _pairs("t", 2)), TextTask("t", "", _pairs("t", 2))])
    with pytest.raises(ValueError, match="string pairs"):
        next(TaskMixture([TextTask("t", "", [("only one",)])]))


def test_text_to_text_batch_tokenizes_truncates_and_shifts():
    pairs = [("5 6 7", "8 9"), ("10 11 12 13 14 15", "16 17 18 19 20")]
    batch = text_to_text_batch(pairs, NumberTokenizer(), inputs_length=5, targets_length=4)
    np.testing.assert_array_equal(batch["encoder_inputs"], [[5, 6, 7, EOS, PAD],
                                                            [10, 11, 12, 13, EOS]])
    np.testing.assert_array_equal(batch["encoder_segment_ids"], [[1, 1, 1, 1, 0], [1] * 5])
    np.testing.assert_array_equal(batch["decoder_targets"], [[8, 9, EOS, PAD], [16, 17, 18, EOS]])
    np.testing.assert_array_equal(batch["decoder_inputs"], [[0, 8, 9, EOS], [0, 16, 17, 18]])
    np.testing.assert_array_equal(batch["decoder_segment_ids"], [[1, 1, 1, 0], [1, 1, 1, 1]])
    assert batch["decoder_weights"].dtype == np.float32
    np.testing.assert_array_equal(batch["decoder_weights"], batch["decoder_segment_ids"])
    with pytest.raises(ValueError, match="input_text, target_text"):
        text_to_text_batch(["5 6"], NumberTokenizer(), inputs_length=4, targets_length=4)


def test_mixture_batches_resume_exactly():
    def batches():
        numbered = [TextTask("n", "1", [(f"{i}", f"{i} {i}") for i in range(4, 40)]),
                    TextTask("m", "2", [(f"{i}", f"{i}") for i in range(40, 50)])]
        return MixtureBatches(TaskMixture(numbered, seed=1), NumberTokenizer(), 4,
                              inputs_length=6, targets_length=4)

    run = batches()
    next(run)
    state = run.state()
    expected = [next(run) for _ in range(3)]
    resumed = batches()
    resumed.restore(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    # Every input starts with its task's prefix ("1: 7" -> [1, 7, EOS]).
    inputs = np.concatenate([b["encoder_inputs"] for b in expected])
    np.testing.assert_array_equal(inputs[:, 0], np.where(inputs[:, 1] < 40, 1, 2))
    np.testing.assert_array_equal(inputs[:, 2], EOS)
