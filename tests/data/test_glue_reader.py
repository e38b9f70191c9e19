"""GLUE reader: the task table against TFDS, mocked data, real array_record preparations of
hand-made files in the original GLUE formats, and the errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.parse
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.text.glue  # noqa: F401  registers glue/* (tfds.text needs TF)

from lmjax.data.glue import GLUE_TASKS, GlueTask, glue_examples, glue_task
from lmjax.data.task_examples import NO_LABEL, TextExample

# --- The table against the installed TFDS builder (no data needed) -------------------------


@pytest.mark.parametrize("name", sorted(GLUE_TASKS))
def test_task_table_matches_the_tfds_builder(name):
    task = GLUE_TASKS[name]
    builder = tfds.builder(f"glue/{name}")
    features = builder.info.features
    assert set(features) == {*task.text_keys, "label", "idx"}
    if task.is_regression:
        assert not isinstance(features["label"], tfds.features.ClassLabel)
        assert np.dtype(features["label"].np_dtype) == np.float32
        assert task.num_labels == 1
    else:
        assert tuple(features["label"].names) == task.label_names
        assert task.num_labels == len(task.label_names)
    # The split names, from the builder's own split generators (paths are never opened).
    download_manager = mock.MagicMock()
    download_manager.download_and_extract.return_value = "/unused"
    download_manager.download.return_value = "/unused"
    generators = builder._split_generators(download_manager)
    assert tuple(str(g.name) for g in generators) == task.splits
    # The input order of a pair follows the TSV columns; similarity tasks are symmetric.
    assert task.symmetric == (name in ("mrpc", "qqp", "stsb"))


def test_task_table_pair_keys_and_lookup():
    assert GLUE_TASKS["qnli"].text_keys == ("question", "sentence")
    assert GLUE_TASKS["mnli"].text_keys == ("premise", "hypothesis") == GLUE_TASKS["ax"].text_keys
    assert GLUE_TASKS["ax"].splits == ("test",)
    assert glue_task("glue/rte") is GLUE_TASKS["rte"]
    assert GLUE_TASKS["sst2"].tfds_name == "glue/sst2"


def test_glue_task_config_validates():
    with pytest.raises(ValueError, match="text_keys"):
        GlueTask("x", ("a", "b", "c"), ("no", "yes"))
    with pytest.raises(ValueError, match="regression task has no label names"):
        GlueTask("x", ("a",), ("no", "yes"), is_regression=True)
    with pytest.raises(ValueError, match="classification task needs them"):
        GlueTask("x", ("a",), ())
    with pytest.raises(ValueError, match="symmetric=True needs two text_keys"):
        GlueTask("x", ("a",), ("no", "yes"), symmetric=True)


# --- Mocked TFDS data ----------------------------------------------------------------------


def _text(value):
    """Mock records hold str, prepared ones UTF-8 bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


@pytest.mark.parametrize("name", sorted(GLUE_TASKS))
def test_every_config_and_split_reads_from_mock_data(name, tmp_path):
    task = GLUE_TASKS[name]
    with tfds.testing.mock_data(num_examples=4):
        for split in task.splits:
            examples = glue_examples(name, split, str(tmp_path))
            records = tfds.data_source(f"glue/{name}", split=split, data_dir=str(tmp_path))
            expected = sorted(((int(r["idx"]), r) for r in records), key=lambda pair: pair[0])
            assert len(examples) == 4
            for example, (idx, record) in zip(examples, expected):
                assert isinstance(example, TextExample)
                assert example.uid == str(idx)
                assert example.texts == tuple(_text(record[k]) for k in task.text_keys)
                assert all(isinstance(text, str) for text in example.texts)
                if task.is_regression:
                    assert type(example.label) is float
                    assert example.label == pytest.approx(float(record["label"]))
                else:
                    assert type(example.label) is int
                    assert example.label == int(record["label"])
                    assert NO_LABEL <= example.label < task.num_labels


# --- Real array_record preparations of hand-made files in the GLUE formats -----------------

SST2_FILES = {
    "SST-2/train.tsv": "sentence\tlabel\n"
    "a warm , funny film about a stubborn goat \t1\n"
    "the plot sags under its own \"cleverness\" \t0\n"
    "café scenes glow \t1\n",
    "SST-2/dev.tsv": "sentence\tlabel\nthe ending drags on and on \t0\n",
    "SST-2/test.tsv": "index\tsentence\n0\tan odd little picture\n1\tnothing works here\n",
}
COLA_FILES = {  # train/dev have no header: source, label, original mark, sentence
    "CoLA/train.tsv": "src1\t1\t\tThe cat sat on the mat.\nsrc1\t0\t*\tCat the mat sat on.\n",
    "CoLA/dev.tsv": "src2\t1\t\tShe gave him a book.\n",
    "CoLA/test.tsv": "index\tsentence\n0\tHim gave she a book.\n",
}
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
STSB_FILES = {
    "STS-B/train.tsv": f"{STSB_HEADER}\tscore\n"
    "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA man plays a flute.\t"
    "A man is playing a flute.\t3.800\n"
    "1\tmain-news\theadlines\t2013\t0002\tnone\tnone\tStocks rise.\tRain expected.\t0.000\n",
    "STS-B/dev.tsv": f"{STSB_HEADER}\tscore\n"
    "0\tmain-forums\tdeft\t2014\t0003\tnone\tnone\tI agree.\tI do agree.\t5.000\n",
    "STS-B/test.tsv": f"{STSB_HEADER}\n"
    "0\tmain-news\theadlines\t2016\t0004\tnone\tnone\tA dog runs.\tA cat sleeps.\n",
}
MNLI_COLUMNS = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2"
MNLI_FILES = {
    "MNLI/train.tsv": f"{MNLI_COLUMNS}\tlabel1\tgold_label\n"
    "0\t1\t1e\tfiction\tThe door was open.\tThe door was shut.\tcontradiction\tcontradiction\n"
    "1\t2\t2n\tslate\tHe bought bread.\tHe bought bread at noon.\tneutral\tneutral\n",
    "MNLI/dev_matched.tsv": f"{MNLI_COLUMNS}\tlabel1\tlabel2\tgold_label\n"
    "0\t3\t3e\tfiction\tShe sings daily.\tShe sings.\tentailment\tentailment\tentailment\n",
    "MNLI/dev_mismatched.tsv": f"{MNLI_COLUMNS}\tlabel1\tlabel2\tgold_label\n"
    "0\t4\t4n\tletters\tWe wrote twice.\tWe wrote in May.\tneutral\tneutral\tneutral\n"
    "1\t5\t5c\tletters\tNo one came.\tEveryone came.\tcontradiction\tneutral\tcontradiction\n",
    "MNLI/test_matched.tsv": f"{MNLI_COLUMNS}\n0\t6\t6\tfiction\tIt rained.\tThe ground is wet.\n",
    "MNLI/test_mismatched.tsv": f"{MNLI_COLUMNS}\n0\t7\t7\tverbatim\tI left.\tI stayed.\n",
}
MRPC_COLUMNS = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
MRPC_FILES = {  # the SentEval copies of the MSR files start with a UTF-8 byte order mark
    "msr_paraphrase_train.txt": f"\ufeff{MRPC_COLUMNS}\n"
    "1\t101\t102\tThe firm posted a profit.\tThe company reported a profit.\n"
    "0\t103\t104\tShares fell 5 percent.\tThe CEO resigned on Monday.\n"
    "1\t105\t106\tIt will rain today.\tRain is forecast for today.\n",
    "mrpc_dev_ids.tsv": "103\t104\n",
    "msr_paraphrase_test.txt": f"\ufeff{MRPC_COLUMNS}\n"
    "1\t201\t202\tThe vote was delayed.\tThe ballot was postponed.\n",
}
AX_FILES = {"AX.tsv": "index\tsentence1\tsentence2\n0\tThe cat is not here.\tThe cat is here.\n"}
# URLs of the builders whose file name on disk is not the last part of the URL path.
LOCAL_NAMES = {"2BOtOJ7": "AX.tsv"}


def _write_files(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _local_downloads(files_dir):
    """Returns a stand-in for DownloadManager.download(_and_extract) serving ``files_dir``.

    A GLUE zip extracts to one folder named like the task (``SST-2/train.tsv``), so the
    "extracted" zip is ``files_dir`` itself; any other URL is the file of the same name.
    """

    def local_path(url):
        name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if name.endswith(".zip"):
            return str(files_dir)
        path = files_dir / LOCAL_NAMES.get(name, name)
        assert path.is_file(), f"the test has no local file for {url}"
        return str(path)

    def download(self, url_or_urls):
        if isinstance(url_or_urls, dict):
            return {key: local_path(url) for key, url in url_or_urls.items()}
        return local_path(url_or_urls)

    return download


def prepare_with_local_files(name, files_dir, data_dir):
    """Runs TFDS's own builder for ``name`` on local files, writing array_record to data_dir."""
    download = _local_downloads(files_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfds.download.DownloadManager, "download", download)
        patch.setattr(tfds.download.DownloadManager, "download_and_extract", download)
        builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return builder


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    files_dir = tmp_path_factory.mktemp("glue_files")
    for files in (SST2_FILES, COLA_FILES, STSB_FILES, MNLI_FILES, MRPC_FILES, AX_FILES):
        _write_files(files_dir, files)
    data_dir = tmp_path_factory.mktemp("glue_data")
    for name in ("sst2", "cola", "stsb", "mnli", "mrpc", "ax"):
        prepare_with_local_files(f"glue/{name}", files_dir, data_dir)
    assert "tensorflow" not in sys.modules
    return str(data_dir)


def _as_tuples(examples):
    return [(e.uid, e.texts, e.label) for e in examples]


def test_prepared_sst2_and_cola_single_sentences(glue_dir):
    assert _as_tuples(glue_examples("sst2", "train", glue_dir)) == [
        ("0", ("a warm , funny film about a stubborn goat ",), 1),
        ("1", ('the plot sags under its own "cleverness" ',), 0),
        ("2", ("café scenes glow ",), 1),
    ]
    assert _as_tuples(glue_examples("sst2", "validation", glue_dir)) == [
        ("0", ("the ending drags on and on ",), 0)
    ]
    assert _as_tuples(glue_examples("sst2", "test", glue_dir)) == [
        ("0", ("an odd little picture",), NO_LABEL),
        ("1", ("nothing works here",), NO_LABEL),
    ]
    assert _as_tuples(glue_examples("cola", "train", glue_dir)) == [
        ("0", ("The cat sat on the mat.",), 1),
        ("1", ("Cat the mat sat on.",), 0),
    ]
    assert _as_tuples(glue_examples("cola", "test", glue_dir)) == [
        ("0", ("Him gave she a book.",), NO_LABEL)
    ]
    sliced = glue_examples("sst2", "train[1:]", glue_dir)  # a slice of TFDS's record order
    by_uid = {e.uid: e for e in glue_examples("sst2", "train", glue_dir)}
    assert len(sliced) == 2 and all(by_uid[e.uid] == e for e in sliced)


def test_prepared_stsb_scores_are_floats(glue_dir):
    train = glue_examples("stsb", "train", glue_dir)
    assert [(e.uid, e.texts) for e in train] == [
        ("0", ("A man plays a flute.", "A man is playing a flute.")),
        ("1", ("Stocks rise.", "Rain expected.")),
    ]
    assert [type(e.label) for e in train] == [float, float]
    assert [e.label for e in train] == pytest.approx([3.8, 0.0], abs=1e-6)
    assert glue_examples("stsb", "validation", glue_dir)[0].label == 5.0
    assert _as_tuples(glue_examples("stsb", "test", glue_dir)) == [
        ("0", ("A dog runs.", "A cat sleeps."), NO_LABEL)
    ]


def test_prepared_mnli_has_matched_and_mismatched_splits(glue_dir):
    entailment, neutral, contradiction = 0, 1, 2
    assert _as_tuples(glue_examples("mnli", "train", glue_dir)) == [
        ("0", ("The door was open.", "The door was shut."), contradiction),
        ("1", ("He bought bread.", "He bought bread at noon."), neutral),
    ]
    assert _as_tuples(glue_examples("mnli", "validation_matched", glue_dir)) == [
        ("0", ("She sings daily.", "She sings."), entailment)
    ]
    assert _as_tuples(glue_examples("mnli", "validation_mismatched", glue_dir)) == [
        ("0", ("We wrote twice.", "We wrote in May."), neutral),
        ("1", ("No one came.", "Everyone came."), contradiction),
    ]
    assert _as_tuples(glue_examples("mnli", "test_matched", glue_dir)) == [
        ("0", ("It rained.", "The ground is wet."), NO_LABEL)
    ]
    assert _as_tuples(glue_examples("mnli", "test_mismatched", glue_dir)) == [
        ("0", ("I left.", "I stayed."), NO_LABEL)
    ]
    both = glue_examples("mnli", "validation_matched+validation_mismatched", glue_dir)
    assert len(both) == 3


def test_prepared_mrpc_keeps_the_row_index_of_the_msr_file(glue_dir):
    # TFDS splits the MSR train file into train and dev by the GLUE dev ids; idx is the row.
    assert _as_tuples(glue_examples("mrpc", "train", glue_dir)) == [
        ("0", ("The firm posted a profit.", "The company reported a profit."), 1),
        ("2", ("It will rain today.", "Rain is forecast for today."), 1),
    ]
    assert _as_tuples(glue_examples("mrpc", "validation", glue_dir)) == [
        ("1", ("Shares fell 5 percent.", "The CEO resigned on Monday."), 0)
    ]
    assert _as_tuples(glue_examples("mrpc", "test", glue_dir)) == [
        ("0", ("The vote was delayed.", "The ballot was postponed."), NO_LABEL)
    ]


def test_prepared_ax_is_unlabelled_test_only(glue_dir):
    assert _as_tuples(glue_examples("ax", "test", glue_dir)) == [
        ("0", ("The cat is not here.", "The cat is here."), NO_LABEL)
    ]


@pytest.mark.slow
def test_prepared_data_reads_in_a_process_without_the_glue_builder(glue_dir):
    """lmjax never imports tfds's glue module: the reader works from the prepared files alone."""
    script = textwrap.dedent(f"""
        import sys
        from lmjax.data.glue import glue_examples
        examples = glue_examples("sst2", "validation", {glue_dir!r})
        assert "tensorflow_datasets.text.glue" not in sys.modules
        assert "tensorflow" not in sys.modules
        print(repr([(e.texts, e.label) for e in examples]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[(('the ending drags on and on ',), 0)]"


# --- Errors --------------------------------------------------------------------------------


def test_missing_data_dir_names_the_directory_and_the_build_command(tmp_path):
    data_dir = str(tmp_path / "absent")
    with pytest.raises(FileNotFoundError) as info:
        glue_examples("sst2", "train", data_dir)
    message = str(info.value)
    assert "does not exist" in message and "'glue/sst2'" in message
    assert f"tfds build glue/sst2 --data_dir={data_dir} --file_format=array_record" in message


def test_unprepared_task_names_the_dataset_directory_and_the_fix(tmp_path, glue_dir):
    with pytest.raises(FileNotFoundError) as info:
        glue_examples("rte", "validation", str(tmp_path))
    message = str(info.value)
    assert f"{os.path.join(str(tmp_path), 'glue', 'rte')} holds no prepared version" in message
    assert f"tfds build glue/rte --data_dir={tmp_path} --file_format=array_record" in message
    # A data_dir with other GLUE tasks prepared, but not this one.
    with pytest.raises(FileNotFoundError, match=r"(?s)glue/qnli.*tfds build glue/qnli"):
        glue_examples("qnli", "train", glue_dir)


def test_unknown_task_or_split_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown GLUE task 'sst5'.*'cola'.*'wnli'"):
        glue_examples("sst5", "train", str(tmp_path))
    with pytest.raises(ValueError, match=r"Use task 'mnli' with split 'validation_matched'"):
        glue_task("mnli_matched")
    with pytest.raises(ValueError, match=r"'validation' is not a split of GLUE task 'mnli'.*"
                                         r"'validation_matched'"):
        glue_examples("mnli", "validation", str(tmp_path))
    with pytest.raises(ValueError, match=r"'train\[:10\]' is not a split of GLUE task 'ax'.*"
                                         r"\['test'\]"):
        glue_examples("ax", "train[:10]", str(tmp_path))
    with pytest.raises(ValueError, match="not a split"):
        glue_examples("sst2", "train+dev", str(tmp_path))
