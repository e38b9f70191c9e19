"""Document sources: TFDS (mocked lm1b), the not-prepared error, text and JSON Lines files."""

from __future__ import annotations

import json
import logging
import os

import pytest
import tensorflow_datasets as tfds

from lmjax.data.sources import open_documents
from lmjax.data.splits import split_of_document


def test_tfds_source_reads_text_field_through_data_source(tmp_path):
    cfg = {"source": "tfds:lm1b", "data_dir": str(tmp_path), "text_key": "text"}
    with tfds.testing.mock_data(num_examples=7):
        docs = open_documents(cfg, "train")
        assert len(docs) == 7
        texts = [docs[i] for i in range(7)]
        with pytest.raises(KeyError, match=r"no field 'sentence'.*data.text_key"):
            open_documents({**cfg, "text_key": "sentence"}, "train")[0]
    assert all(isinstance(t, str) and t for t in texts)
    assert len(set(texts)) > 1


def test_unprepared_tfds_dataset_names_dataset_directory_and_fix(tmp_path, caplog):
    data_dir = str(tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError) as info:
        open_documents({"source": "tfds:lm1b", "data_dir": data_dir, "text_key": "text"}, "train")
    message = str(info.value)
    assert "'lm1b'" in message and data_dir in message
    assert "does not exist" in message
    assert f"tfds build lm1b --data_dir={data_dir} --file_format=array_record" in message
    assert "data.source='python_docs'" in message
    # TFDS's warnings about the folders it probed are dropped: the error says it all, once.
    assert [record.getMessage() for record in caplog.records if record.name == "absl"] == []


def test_tfds_warnings_are_passed_on_when_the_dataset_opens(monkeypatch, caplog):
    def data_source(name, split, data_dir, download):
        logging.getLogger("absl").warning("probed %s", data_dir)
        return [{"text": b"a document"}]

    monkeypatch.setattr(tfds, "data_source", data_source)
    documents = open_documents({"source": "tfds:lm1b", "data_dir": "/prepared"}, "train")
    assert list(documents) == ["a document"]
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == ["probed /prepared"]


def test_dataset_unknown_to_this_tfds_and_not_prepared(tmp_path):
    expected = r"(?s)'c4/en'.*holds no prepared version.*tfds build c4/en"
    with pytest.raises(FileNotFoundError, match=expected):
        open_documents({"source": "tfds:c4/en", "data_dir": str(tmp_path)}, "train")


def test_tfrecord_only_preparation_asks_for_array_record(tmp_path):
    version_dir = tmp_path / "lm1b" / "1.1.0"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    (version_dir / "lm1b-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"(?s)not in the array_record format.*convert"):
        open_documents({"source": "tfds:lm1b", "data_dir": str(tmp_path)}, "train")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_text_files_hash_split_into_disjoint_train_and_validation(tmp_path):
    for i in range(60):
        _write(tmp_path / "corpus" / f"doc{i:02d}.txt", f"document number {i}\n")
    cfg = {"source": f"text:{tmp_path}/corpus/*.txt"}
    train, validation = open_documents(cfg, "train"), open_documents(cfg, "validation")
    assert len(train) + len(validation) == 60
    assert set(train).isdisjoint(validation)
    expected = sorted(f"document number {i}\n" for i in range(60)
                      if split_of_document(f"doc{i:02d}.txt") == "validation")
    assert sorted(validation) == expected and expected


def test_text_paragraph_unit_and_split_placeholder(tmp_path):
    text = "First paragraph\nstill first.\n\n  \nSecond one.\n\n\nThird."
    _write(tmp_path / "train" / "a.txt", text)
    _write(tmp_path / "validation" / "b.txt", "Held out.")
    cfg = {"source": f"text:{tmp_path}/{{split}}/*.txt", "text_unit": "paragraph"}
    paragraphs = ["First paragraph\nstill first.", "Second one.", "Third."]
    assert open_documents(cfg, "train") == paragraphs
    assert open_documents(cfg, "validation") == ["Held out."]
    whole = open_documents({**cfg, "text_unit": "file"}, "train")
    assert whole == [text]
    with pytest.raises(ValueError, match="text_unit='sentence'"):
        open_documents({**cfg, "text_unit": "sentence"}, "train")


def test_single_file_given_by_a_relative_path(tmp_path, monkeypatch):
    _write(tmp_path / "book.txt", "Chapter one.\n\nChapter two.\n")
    monkeypatch.chdir(tmp_path)
    cfg = {"source": "text:book.txt", "text_unit": "paragraph"}
    # Paragraphs are named book.txt#<index>, relative to the file's directory.
    expected = [p for i, p in enumerate(["Chapter one.", "Chapter two."])
                if split_of_document(f"book.txt#{i}") == "train"]
    assert open_documents(cfg, "train") == expected == ["Chapter one.", "Chapter two."]
    with pytest.raises(ValueError, match="puts none in 'validation'"):
        open_documents(cfg, "validation")


def test_text_source_errors_name_the_problem(tmp_path):
    _write(tmp_path / "train" / "empty.txt", "   \n")
    with pytest.raises(ValueError, match=r"empty.txt.*is empty"):
        open_documents({"source": f"text:{tmp_path}/{{split}}/*.txt"}, "train")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        open_documents({"source": f"text:{tmp_path}/nothing/*.txt"}, "train")
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "x.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        open_documents({"source": f"text:{tmp_path}/latin1/*.txt"}, "train")
    _write(tmp_path / "one" / "only.txt", "a single document")
    with pytest.raises(ValueError, match=r"(?i)split 'test'.*'\{split\}'"):
        open_documents({"source": f"text:{tmp_path}/one/*.txt"}, "test")


def test_jsonl_source_reads_text_key_and_reports_bad_lines(tmp_path):
    lines = [json.dumps({"body": f"record {i}", "id": i}) for i in range(40)]
    _write(tmp_path / "train" / "part.jsonl",
           "\n".join(lines[:20]) + "\n\n" + "\n".join(lines[20:]))
    cfg = {"source": f"jsonl:{tmp_path}/{{split}}/*.jsonl", "text_key": "body"}
    assert open_documents(cfg, "train") == [f"record {i}" for i in range(40)]
    hashed = {"source": f"jsonl:{tmp_path}/train/*.jsonl", "text_key": "body"}
    assert len(open_documents(hashed, "train")) + len(open_documents(hashed, "validation")) == 40
    with pytest.raises(ValueError, match=r"part.jsonl:1 has no field 'text'.*data.text_key"):
        open_documents({**cfg, "text_key": "text"}, "train")
    _write(tmp_path / "bad" / "x.jsonl", '{"text": "fine"}\n{not json}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2 is not valid JSON"):
        open_documents({"source": f"jsonl:{tmp_path}/bad/*.jsonl"}, "train")
    _write(tmp_path / "empty" / "e.jsonl", "\n\n")
    with pytest.raises(ValueError, match=r"e.jsonl.*has no records"):
        open_documents({"source": f"jsonl:{tmp_path}/empty/*.jsonl"}, "train")


def test_unknown_or_missing_source_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown kind 'csv'"):
        open_documents({"source": "csv:/data/*.csv"}, "train")
    with pytest.raises(ValueError, match="not a known source"):
        open_documents({"source": "wikipedia"}, "train")
    with pytest.raises(ValueError, match="set it to one of"):
        open_documents({"source": ""}, "train")


def test_default_data_dir_honours_environment(monkeypatch, tmp_path):
    from lmjax.data.sources import resolved_data_dir

    monkeypatch.setenv("LMJAX_DATA_DIR", str(tmp_path))
    assert resolved_data_dir("") == str(tmp_path)
    monkeypatch.delenv("LMJAX_DATA_DIR")
    assert resolved_data_dir(None).endswith(os.path.join(".cache", "lmjax", "tensorflow_datasets"))
    assert resolved_data_dir("~/x") == os.path.expanduser("~/x")
