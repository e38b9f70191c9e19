"""Dialogue data: JSONL conversations, Meena's (7-turn context, response) examples, batches."""

import json

import numpy as np
import pytest

from lmjax.data import dialogue

from .conftest import EOS, PAD


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_read_conversations_parses_lines_and_skips_blank_ones(tmp_path):
    path = _write(tmp_path / "chats.jsonl", [
        json.dumps({"turns": ["4 5", "6"]}), "", json.dumps({"turns": ["7", "8", "9"]}),
    ])
    assert dialogue.read_conversations(path) == [("4 5", "6"), ("7", "8", "9")]


@pytest.mark.parametrize("line, match", [
    ("{not json", "not valid JSON"),
    ('{"text": "x"}', 'no "turns" field'),
    ('{"turns": "a b"}', "list of strings"),
    ('{"turns": ["a", 3]}', "list of strings"),
    ('{"turns": ["only one"]}', "at least two"),
])
def test_bad_lines_are_errors_naming_file_and_line(tmp_path, line, match):
    path = _write(tmp_path / "chats.jsonl", [json.dumps({"turns": ["4", "5"]}), line])
    with pytest.raises(ValueError, match=match) as error:
        dialogue.read_conversations(path)
    assert "chats.jsonl:2" in str(error.value)


def test_missing_files_are_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No dialogue file"):
        dialogue.read_conversations(str(tmp_path / "*.jsonl"))


def test_hash_split_partitions_the_conversations(tmp_path):
    path = _write(tmp_path / "chats.jsonl",
                  [json.dumps({"turns": [str(4 + i), str(5 + i)]}) for i in range(60)])
    train = dialogue.read_conversations(path, "train", validation_fraction=0.3)
    held = dialogue.read_conversations(path, "validation", validation_fraction=0.3)
    assert len(train) + len(held) == 60 and not set(train) & set(held) and held


def test_examples_keep_seven_turns_of_context_joined_by_the_separator(word_tokenizer):
    turns = [str(10 + i) for i in range(9)]  # turn i is the single token 10 + i
    examples = dialogue.dialogue_examples(turns, word_tokenizer.encode, separator_id=EOS,
                                          eos_id=EOS)
    assert len(examples) == 8
    assert examples[0] == ([10], [11, EOS])
    assert examples[1] == ([10, EOS, 11], [12, EOS])
    # Response turn 8 sees turns 1..7 (seven turns), not turn 0.
    context, targets = examples[7]
    assert context == [11, EOS, 12, EOS, 13, EOS, 14, EOS, 15, EOS, 16, EOS, 17]
    assert targets == [18, EOS]


def test_context_is_truncated_from_the_left_and_targets_from_the_right(word_tokenizer):
    turns = ["4 5 6 7", "8 9", "10 11 12 13 14"]
    examples = dialogue.dialogue_examples(turns, word_tokenizer.encode, separator_id=99,
                                          eos_id=EOS, encoder_len=5, decoder_len=3)
    assert examples[1] == ([6, 7, 99, 8, 9], [10, 11, EOS])


def test_passage_conversations_cut_sentences_into_runs():
    document = "One is here. Two is here. Three is here. Four is here. Five is here."
    conversations = dialogue.passage_conversations([document, "Alone here."], max_turns=2)
    assert conversations == [("One is here.", "Two is here."),
                             ("Three is here.", "Four is here.")]


def _batches(word_tokenizer, conversations, **kwargs):
    options = dict(encoder_len=6, decoder_len=4, global_batch=2, seed=3, process_index=0,
                   process_count=1)
    options.update(kwargs)
    return dialogue.DialogueBatches(conversations, word_tokenizer, **options)


CONVERSATIONS = [("4 5", "6 7", "8"), ("9", "10 11 12 13 14"), ("15", "16", "17", "18")]


def test_unshuffled_batch_rows_are_exact(word_tokenizer):
    batches = _batches(word_tokenizer, CONVERSATIONS, shuffle=False, repeat=False)
    first = next(batches)
    assert set(first) == set(dialogue.DIALOGUE_BATCH_KEYS)
    np.testing.assert_array_equal(first["encoder_inputs"], [[4, 5, 0, 0, 0, 0],
                                                            [4, 5, EOS, 6, 7, 0]])
    np.testing.assert_array_equal(first["encoder_segment_ids"], [[1, 1, 0, 0, 0, 0],
                                                                 [1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(first["decoder_targets"], [[6, 7, EOS, PAD], [8, EOS, PAD, PAD]])
    np.testing.assert_array_equal(first["decoder_inputs"], [[PAD, 6, 7, PAD], [PAD, 8, PAD, PAD]])
    np.testing.assert_array_equal(first["decoder_segment_ids"], [[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(first["decoder_weights"], [[1, 1, 1, 0], [1, 1, 0, 0]])
    assert first["decoder_weights"].dtype == np.float32
    assert first["encoder_inputs"].dtype == np.int32
    second = next(batches)
    np.testing.assert_array_equal(second["decoder_targets"], [[10, 11, 12, EOS], [16, EOS, 0, 0]])
    third = next(batches)  # examples 5 and 6 = responses "17", "18" of the third conversation
    np.testing.assert_array_equal(third["decoder_targets"][:, :2], [[17, EOS], [18, EOS]])
    with pytest.raises(StopIteration):
        next(batches)


def test_one_pass_pads_the_last_batch_with_zero_weight_rows(word_tokenizer):
    rows = list(_batches(word_tokenizer, CONVERSATIONS[:2], shuffle=False, repeat=False))
    assert len(rows) == 2  # three examples in batches of two
    assert rows[1]["decoder_weights"][1].sum() == 0
    assert rows[1]["encoder_segment_ids"][1].sum() == 0


def test_shuffle_is_seeded_and_covers_every_example_once_per_epoch(word_tokenizer):
    def first_targets(seed):
        batches = _batches(word_tokenizer, CONVERSATIONS, seed=seed, global_batch=1)
        return [int(next(batches)["decoder_targets"][0, 0]) for _ in range(6)]

    assert first_targets(3) == first_targets(3)
    assert sorted(first_targets(3)) == [6, 8, 10, 16, 17, 18]
    assert any(first_targets(s) != first_targets(3) for s in range(4, 10))


def test_restore_continues_with_the_same_batches(word_tokenizer):
    reference = _batches(word_tokenizer, CONVERSATIONS)
    stream = [next(reference) for _ in range(7)]  # crosses an epoch boundary (6 examples / 2)
    resumed_from = _batches(word_tokenizer, CONVERSATIONS)
    for _ in range(4):
        next(resumed_from)
    state = resumed_from.state()
    fresh = _batches(word_tokenizer, CONVERSATIONS)
    fresh.restore(json.loads(json.dumps(state)))
    for expected in stream[4:]:
        got = next(fresh)
        for key in dialogue.DIALOGUE_BATCH_KEYS:
            np.testing.assert_array_equal(got[key], expected[key])
    with pytest.raises(ValueError, match="shuffle seed"):
        _batches(word_tokenizer, CONVERSATIONS, seed=4).restore(state)


def test_processes_take_their_slice_of_the_global_batch(word_tokenizer):
    whole = next(_batches(word_tokenizer, CONVERSATIONS, global_batch=2))
    second = next(_batches(word_tokenizer, CONVERSATIONS, global_batch=2, process_index=1,
                           process_count=2))
    np.testing.assert_array_equal(second["decoder_targets"], whole["decoder_targets"][1:])


def test_config_functions_read_jsonl_dialogues(tmp_path, word_tokenizer):
    for split, rows in (("train", CONVERSATIONS), ("validation", CONVERSATIONS[:1])):
        _write(tmp_path / f"{split}.jsonl", [json.dumps({"turns": list(c)}) for c in rows])
    cfg = {"source": f"dialogue:{tmp_path}/{{split}}.jsonl", "encoder_len": 6, "decoder_len": 4}
    train = dialogue.dialogue_train_batches(cfg, word_tokenizer, 2, process_index=0,
                                            process_count=1)
    assert next(train)["encoder_inputs"].shape == (2, 6)
    evals = dialogue.dialogue_eval_batches(cfg, word_tokenizer, 2, None, process_index=0,
                                           process_count=1)
    assert len(evals) == 1
    np.testing.assert_array_equal(evals[0]["decoder_targets"], [[6, 7, EOS, 0], [8, EOS, 0, 0]])


def test_offline_default_reads_pseudo_conversations_from_documents(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "doc.txt").write_text("4 5. 6 7. 8.\n\n9 10.")
    cfg = {"source": f"text:{tmp_path}/{{split}}/*.txt", "max_turns": 16}
    assert dialogue.open_conversations(cfg, "train") == [("4 5.", "6 7.", "8.", "9 10.")]


def test_bad_arguments_are_clear_errors(word_tokenizer):
    with pytest.raises(ValueError, match="global_batch"):
        _batches(word_tokenizer, CONVERSATIONS, global_batch=3, process_count=2)
    with pytest.raises(ValueError, match="no example"):
        _batches(word_tokenizer, [("4",)])
    with pytest.raises(ValueError, match="encoder_len"):
        _batches(word_tokenizer, CONVERSATIONS, encoder_len=0)
