"""SQuAD 1.1 / 2.0 through ``lmjax finetune``: real TFDS preparations of hand-written SQuAD
files, a tiny pre-trained BERT, doc-stride rows, span decoding and the official scores."""

import json
import math

import numpy as np
import pytest

from lmjax.config import ConfigError, apply_overrides, load_experiment
from lmjax.data.finetune_tasks import load_task
from lmjax.data.squad_task import null_threshold_scores
from lmjax.data.task_inputs import EncoderFormat, GPT1Format
from lmjax.eval.squad_decoding import Prediction
from lmjax.train import finetune
from lmjax.train.trained_run import load_trained_run
from tests.squad_data import prepared_squad_data_dir, qa, squad_json
from tests.tiny_runs import pretrained_tiny_run

CASTLE = ("The castle was built in 1352 by Duke Albert on a rocky hill above the river Aare, "
          "and it was rebuilt in stone after a great fire destroyed the wooden hall in 1405.")
BRIDGE = ("The old bridge crosses the Rhine at Basel; merchants paid a toll in silver to the "
          "bishop, who used the money to repair the cathedral roof every spring.")
GARDEN = ("In the monastery garden the monks grew onions, cabbages and medicinal herbs such as "
          "sage, while bees kept in straw hives near the wall gave them honey and wax.")
CLOCK = ("The town clock in the tower strikes every hour; its mechanism was made by a "
         "locksmith named Hans Luter, who worked on it for seven years.")


def answer(context, text):
    """``(text, answer_start)`` of the first occurrence of ``text`` in ``context``."""
    return text, context.index(text)


SQUAD_FILES = {
    "train-v1.1.json": squad_json("1.1", [
        ("Castle", CASTLE, [
            qa("c1", "When was the castle built?", answer(CASTLE, "1352")),
            qa("c2", "Who built the castle?", answer(CASTLE, "Duke Albert")),
            qa("c3", "What destroyed the wooden hall?", answer(CASTLE, "a great fire")),
        ]),
        ("Bridge", BRIDGE, [
            qa("b1", "Which river does the bridge cross?", answer(BRIDGE, "the Rhine")),
            qa("b2", "What did the bishop repair?", answer(BRIDGE, "the cathedral roof")),
        ]),
        ("Garden", GARDEN, [
            qa("g1", "What did the bees give the monks?", answer(GARDEN, "honey and wax")),
            qa("g2", "Which herb did the monks grow?", answer(GARDEN, "sage")),
        ]),
    ]),
    "dev-v1.1.json": squad_json("1.1", [
        ("Clock", CLOCK, [
            qa("k1", "Who made the mechanism of the clock?", answer(CLOCK, "Hans Luter"),
               answer(CLOCK, "a locksmith named Hans Luter")),
            qa("k2", "How long did he work on it?", answer(CLOCK, "seven years")),
        ]),
        ("Castle", CASTLE, [qa("c4", "When was the castle rebuilt?", answer(CASTLE, "1405"))]),
    ]),
    "train-v2.0.json": squad_json("v2.0", [
        ("Castle", CASTLE, [
            qa("c1", "When was the castle built?", answer(CASTLE, "1352"), impossible=False),
            qa("c5", "Who destroyed the castle in 1352?", impossible=True,
               plausible=[answer(CASTLE, "Duke Albert")]),
        ]),
        ("Bridge", BRIDGE, [
            qa("b1", "Which river does the bridge cross?", answer(BRIDGE, "the Rhine"),
               impossible=False),
            qa("b3", "How much gold did the merchants pay?", impossible=True),
        ]),
        ("Garden", GARDEN, [
            qa("g1", "What did the bees give the monks?", answer(GARDEN, "honey and wax"),
               impossible=False),
            qa("g3", "Which fruit trees grew in the garden?", impossible=True),
        ]),
    ]),
    "dev-v2.0.json": squad_json("v2.0", [
        ("Clock", CLOCK, [
            qa("k1", "Who made the mechanism of the clock?", answer(CLOCK, "Hans Luter"),
               impossible=False),
            qa("k3", "Who painted the clock face?", impossible=True),
        ]),
        ("Bridge", BRIDGE, [qa("b4", "When was the bridge opened?", impossible=True)]),
    ]),
}

V2_KEYS = {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact",
           "NoAns_f1", "NoAns_total", "best_f1", "best_f1_threshold", "best_exact",
           "best_exact_threshold"}


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    return prepared_squad_data_dir(SQUAD_FILES, tmp_path_factory.mktemp("squad_files"),
                                   tmp_path_factory.mktemp("squad_data"))


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, tiny_corpus):
    return pretrained_tiny_run(tmp_path_factory.mktemp("bert"), tiny_corpus,
                               "experiments/encoders/bert.py:size=tiny")


def squad_config(version, init, data_dir, *extra):
    config = load_experiment(
        f"experiments/finetune/squad.py:version={version},init={init},data_dir={data_dir},"
        "seq_len=64,doc_stride=16,max_query_len=16,lr=1e-3,epochs=2,batch=8")
    apply_overrides(config, ["--config.train.log_every=1", *extra])
    return config


def one_hot_logits(positions, length, hot=10.0):
    """float32 [N, L]: ``hot`` at each row's position, ``-hot`` elsewhere."""
    logits = np.full([len(positions), length], -hot, np.float32)
    logits[np.arange(len(positions)), positions] = hot
    return logits


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_gold_logits_score_100_and_cls_logits_answer_nothing(version, squad_dir, bert_run):
    config = squad_config(version, bert_run, squad_dir)
    task = load_task(config.task)
    assert (task.head, task.main_metric, task.num_labels) == ("span", "f1", 1)
    tokenizer = load_trained_run(bert_run).tokenizer
    fmt, _ = finetune.input_format("bert", tokenizer, 384, 64)
    split = task.encode(task.evaluation, tokenizer, fmt, False)
    arrays = split.arrays
    assert set(arrays) == {"inputs", "token_type_ids", "attention_mask", "start_positions",
                           "end_positions", "example_weights"}
    rows = len(arrays["example_weights"])
    assert rows > len(task.evaluation)  # the contexts are longer than one 45-token window
    np.testing.assert_array_equal(arrays["example_weights"], np.ones(rows, np.float32))
    assert arrays["inputs"].shape == (rows, 64)

    gold = {"start_logits": one_hot_logits(arrays["start_positions"], 64),
            "end_logits": one_hot_logits(arrays["end_positions"], 64)}
    scores = split.score(gold)
    assert scores["exact"] == scores["f1"] == 100.0 and scores["total"] == 3
    nothing = {"start_logits": one_hot_logits(np.zeros(rows, int), 64),
               "end_logits": one_hot_logits(np.zeros(rows, int), 64)}
    empty = split.score(nothing)
    if version == "1.1":
        assert set(scores) == {"exact", "f1", "total"}
        assert empty["exact"] < 100.0  # 1.1 always answers a span: never the gold one here
    else:
        assert set(scores) == V2_KEYS and set(empty) == V2_KEYS
        assert scores["HasAns_exact"] == scores["NoAns_exact"] == 100.0
        assert (scores["HasAns_total"], scores["NoAns_total"]) == (1, 2)
        assert scores["best_f1"] == 100.0 and math.isfinite(scores["best_f1_threshold"])
        # [CLS] everywhere: the two unanswerable questions right, the answerable one wrong
        assert empty["NoAns_exact"] == 100.0 and empty["HasAns_exact"] == 0.0
        assert empty["exact"] == pytest.approx(200 / 3)
        assert empty["best_f1"] == pytest.approx(200 / 3)
        assert math.isfinite(empty["best_f1_threshold"])  # "answer nothing", JSON-safe


def test_best_threshold_handles_questions_without_any_valid_span():
    def prediction(uid, text, diff):
        return Prediction(uid=uid, text=text, score=0.0, null_score=diff, null_score_diff=diff,
                          n_best=())

    gold = {"a": ("Hans Luter",), "b": (), "c": ()}
    # "b" had no valid span: text "" and diff +inf, answered "" whatever the threshold
    predictions = [prediction("a", "Hans Luter", -4.0), prediction("b", "", math.inf),
                   prediction("c", "seven years", 1.0)]
    scores = null_threshold_scores(predictions, gold)
    assert scores == {"best_f1": 100.0, "best_f1_threshold": -4.0, "best_exact": 100.0,
                      "best_exact_threshold": -4.0}
    # answering nothing is best: a finite threshold below every difference
    predictions[0] = prediction("a", "the clock", -4.0)
    scores = null_threshold_scores(predictions, gold)
    assert scores["best_f1"] == pytest.approx(200 / 3) and scores["best_f1_threshold"] == -5.0


def test_squad_v1_1_and_v2_0_fine_tune_and_load_back(tmp_path, squad_dir, bert_run):
    v1 = finetune.finetune(squad_config("1.1", bert_run, squad_dir, "--config.train.epochs=1"),
                           str(tmp_path / "v11"))
    assert [e["epoch"] for e in v1["epochs"]] == [1] and v1["main_metric"] == "f1"
    for scores in v1["epochs"]:
        assert 0.0 <= scores["exact"] <= scores["f1"] <= 100.0 and scores["total"] == 3
        assert np.isfinite(scores["objective_loss"])
    assert v1["best_score"] == max(e["f1"] for e in v1["epochs"])

    v2 = finetune.finetune(squad_config("2.0", bert_run, squad_dir, "--config.train.epochs=1"),
                           str(tmp_path / "v20"))
    with open(tmp_path / "v20" / "results.json") as f:
        results = json.load(f)
    (scores,) = results["epochs"]
    assert V2_KEYS <= set(scores) and results["task"] == "squad/v2.0"
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_exact"):
        assert 0.0 <= scores[key] <= 100.0 and math.isfinite(scores[key])
    assert scores["best_f1"] >= scores["f1"] and math.isfinite(scores["best_f1_threshold"])

    run = load_trained_run(v2["best_dir"])
    assert run.config.model.head == "span" and run.config.task.name == "squad/v2.0"
    assert run.step == scores["step"]


def test_bad_squad_configs_name_the_fix(tmp_path, squad_dir, bert_run):
    config = squad_config("1.1", bert_run, squad_dir, "--config.task.doc_stride=128")
    with pytest.raises(ValueError, match=r"task.doc_stride=128 .*doc_stride=16"):
        load_task(config.task)
    config = squad_config("2.0", bert_run, squad_dir, "--config.task.seq_len=16")
    with pytest.raises(ValueError, match="no context fits in a row"):
        load_task(config.task)
    with pytest.raises(ValueError, match="unknown version"):
        load_experiment("experiments/finetune/squad.py:version=3.0")
    with pytest.raises(ConfigError):
        load_experiment("experiments/finetune/squad.py:versoin=2.0")
    with pytest.raises(FileNotFoundError, match="tfds build squad/v1.1"):
        load_task(squad_config("1.1", bert_run, str(tmp_path / "absent")).task)
    task = load_task(squad_config("1.1", bert_run, squad_dir).task)
    tokenizer = load_trained_run(bert_run).tokenizer
    with pytest.raises(ValueError, match="needs an encoder backbone"):
        task.encode(task.train, tokenizer, GPT1Format(5, 6, 7, 0, 64), True)
    with pytest.raises(ValueError, match="seq_len=32 .* task.seq_len=64"):
        task.encode(task.train, tokenizer, EncoderFormat(5, 6, 0, 32), True)
