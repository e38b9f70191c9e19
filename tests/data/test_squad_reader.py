"""SQuAD reader: features against the TFDS builder, mocked data, real array_record preparations
of hand-made SQuAD v1.1 / v2.0 JSON files, and the errors."""

from __future__ import annotations

import functools
import os
from unittest import mock

import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from lmjax.data.squad import SQUAD_SPLITS, squad_examples
from lmjax.data.task_examples import SquadExample
from tests.squad_data import prepared_squad_data_dir, qa, squad_json


@pytest.mark.parametrize("version", ["v1.1", "v2.0"])
def test_reader_fields_and_splits_match_the_tfds_builder(version):
    builder = tfds.builder(f"squad/{version}")
    features = builder.info.features
    expected = {"id", "title", "context", "question", "answers"}
    if version == "v2.0":
        expected |= {"is_impossible", "plausible_answers"}
    assert set(features) == expected
    assert set(features["answers"].feature) == {"text", "answer_start"}
    download_manager = mock.MagicMock()
    download_manager.download_and_extract.return_value = {"train": "/unused", "dev": "/unused"}
    generators = builder._split_generators(download_manager)
    assert tuple(str(g.name) for g in generators) == SQUAD_SPLITS


def _text(value):
    """Mock records hold str, prepared ones UTF-8 bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_both_versions_read_from_mock_data(version, tmp_path, monkeypatch):
    # TFDS's random mock draws each leaf of a Sequence dict at its own random length, which no
    # real record has (answers.text and answers.answer_start always pair up); fix the length.
    monkeypatch.setattr(mocking, "RandomFakeGenerator",
                        functools.partial(mocking.RandomFakeGenerator, constant_dynamic_shape=True))
    with tfds.testing.mock_data(num_examples=5):
        for split in SQUAD_SPLITS:
            examples = squad_examples(version, split, str(tmp_path))
            records = tfds.data_source(f"squad/v{version}", split=split, data_dir=str(tmp_path))
            assert len(examples) == 5
            for example, record in zip(examples, records):
                assert isinstance(example, SquadExample)
                assert example.uid == _text(record["id"])
                assert example.question == _text(record["question"])
                assert example.context == _text(record["context"])
                assert example.title == _text(record["title"])
                if version == "2.0" and record["is_impossible"]:
                    assert example.answers == () and example.is_impossible
                else:
                    assert example.answers == tuple(_text(t) for t in record["answers"]["text"])
                    assert example.answer_starts == tuple(
                        int(s) for s in record["answers"]["answer_start"])
                    assert len(example.answers) == 10
                assert all(isinstance(a, str) for a in example.answers)
                assert all(type(s) is int for s in example.answer_starts)


# --- Real array_record preparations of hand-made files in the SQuAD JSON format ------------

ZURICH = "Zürich lies at the north end of Lake Zürich; its old town straddles the Limmat."
LIGHT = "Light travels at about 300,000 km per second in a vacuum."


SQUAD_FILES = {
    "train-v1.1.json": squad_json("1.1", [
        ("Zürich", ZURICH, [qa("z1", "Which river runs through the old town?", ("Limmat", 72))]),
        ("Light", LIGHT, [qa("l1", "How fast does light travel?", ("300,000 km per second", 23))]),
    ]),
    "dev-v1.1.json": squad_json("1.1", [
        ("Zürich", ZURICH, [
            # Three annotators, two of them agreeing: duplicates are kept.
            qa("z2", "Where is Zürich?", ("at the north end of Lake Zürich", 12),
                ("north end of Lake Zürich", 19), ("north end of Lake Zürich", 19)),
        ]),
    ]),
    "train-v2.0.json": squad_json("v2.0", [
        ("Light", LIGHT, [
            qa("l2", "Where does light travel fastest?", ("in a vacuum", 45), impossible=False),
            qa("l3", "How fast does sound travel in a vacuum?", impossible=True,
                plausible=[("300,000 km per second", 23)]),
        ]),
    ]),
    "dev-v2.0.json": squad_json("v2.0", [
        ("Zürich", ZURICH, [
            qa("z3", "Which lake lies south of Zürich?", ("Lake Zürich", 32),
                ("Lake Zürich", 32), impossible=False),
            qa("z4", "Which river runs under the lake?", impossible=True),
        ]),
    ]),
}


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    return prepared_squad_data_dir(SQUAD_FILES, tmp_path_factory.mktemp("squad_files"),
                                   tmp_path_factory.mktemp("squad_data"))


def _by_uid(examples):
    return {example.uid: example for example in examples}


def test_prepared_v1_1_examples_and_character_offsets(squad_dir):
    train = _by_uid(squad_examples("1.1", "train", squad_dir))
    assert train == {
        "z1": SquadExample(uid="z1", question="Which river runs through the old town?",
                           context=ZURICH, answers=("Limmat",), answer_starts=(72,),
                           title="Zürich"),
        "l1": SquadExample(uid="l1", question="How fast does light travel?", context=LIGHT,
                           answers=("300,000 km per second",), answer_starts=(23,),
                           title="Light"),
    }
    (dev,) = squad_examples("v1.1", "validation", squad_dir)
    assert dev.uid == "z2" and dev.question == "Where is Zürich?"
    assert dev.answers == ("at the north end of Lake Zürich", "north end of Lake Zürich",
                           "north end of Lake Zürich")
    assert dev.answer_starts == (12, 19, 19)
    for example in [*train.values(), dev]:
        for text, start in zip(example.answers, example.answer_starts):
            assert example.context[start:start + len(text)] == text  # offsets count characters


def test_prepared_v2_0_unanswerable_questions_have_no_answers(squad_dir):
    train = _by_uid(squad_examples("2.0", "train", squad_dir))
    assert set(train) == {"l2", "l3"}
    assert train["l2"].answers == ("in a vacuum",) and train["l2"].answer_starts == (45,)
    assert not train["l2"].is_impossible
    # Plausible answers of an unanswerable question are not gold answers.
    assert train["l3"].answers == () and train["l3"].answer_starts == ()
    assert train["l3"].is_impossible and train["l3"].context == LIGHT
    dev = _by_uid(squad_examples("2.0", "validation", squad_dir))
    assert dev["z3"].answers == ("Lake Zürich", "Lake Zürich")
    assert dev["z3"].answer_starts == (32, 32) and dev["z3"].title == "Zürich"
    assert dev["z4"].is_impossible and dev["z4"].question == "Which river runs under the lake?"
    assert ZURICH[32:32 + len("Lake Zürich")] == "Lake Zürich"


# --- Errors --------------------------------------------------------------------------------


def test_missing_or_unprepared_data_dir_names_the_fix(tmp_path, squad_dir):
    data_dir = str(tmp_path / "absent")
    with pytest.raises(FileNotFoundError) as info:
        squad_examples("1.1", "train", data_dir)
    message = str(info.value)
    assert "does not exist" in message and "'squad/v1.1'" in message
    assert f"tfds build squad/v1.1 --data_dir={data_dir} --file_format=array_record" in message
    with pytest.raises(FileNotFoundError) as info:
        squad_examples("2.0", "validation", str(tmp_path))
    message = str(info.value)
    assert f"{os.path.join(str(tmp_path), 'squad', 'v2.0')} holds no prepared version" in message
    assert f"tfds build squad/v2.0 --data_dir={tmp_path} --file_format=array_record" in message


def test_unknown_version_or_split(tmp_path):
    with pytest.raises(ValueError, match=r"SQuAD version '3.0' is unknown.*\['1.1', '2.0'\]"):
        squad_examples("3.0", "train", str(tmp_path))
    with pytest.raises(ValueError, match=r"'dev' is not a split of TFDS 'squad/v1.1'.*"
                                         r"\['train', 'validation'\]"):
        squad_examples("1.1", "dev", str(tmp_path))
    with pytest.raises(ValueError, match="'test' is not a split.*official dev set"):
        squad_examples("v2.0", "test", str(tmp_path))
