"""The embedded corpus: ast extraction, the TFDS builder, splits, reuse, concurrent preparation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow_datasets as tfds

from lmjax.data import python_docs
from lmjax.data.splits import split_of_document


def _names_and_texts(records):
    return [(r["source"].decode(), r["text"].decode()) for r in records]


def test_full_corpus_prepares_and_reads_back_with_tfds_data_source(python_docs_dir):
    data_dir, seconds = python_docs_dir
    assert seconds < 60, f"preparing the embedded corpus took {seconds:.0f} s"
    config_name = python_docs.python_docs_config().name
    train = tfds.data_source(f"python_docs/{config_name}", split="train", data_dir=data_dir)
    validation = tfds.data_source(f"python_docs/{config_name}", split="validation",
                                  data_dir=data_dir)
    train_docs, validation_docs = _names_and_texts(train), _names_and_texts(validation)
    names = [n for n, _ in train_docs + validation_docs]
    assert len(names) == len(set(names)) > 400
    assert 0.02 <= len(validation_docs) / len(names) <= 0.09
    assert all(split_of_document(n) == "train" for n, _ in train_docs)
    assert all(split_of_document(n) == "validation" for n, _ in validation_docs)
    by_name = dict(train_docs + validation_docs)
    assert sum(n.startswith("pydoc_data.topics/") for n in names) > 50
    assert by_name["pydoc_data.topics/assert"].startswith('The "assert" statement')
    decoder = by_name["stdlib/json/decoder.py"]
    assert decoder.startswith("Module json.decoder\n\n")
    assert "class JSONDecoder(object)\n" in decoder
    assert "def JSONDecoder.decode(self, s, _w=WHITESPACE.match)\n" in decoder
    excluded = ("stdlib/test/", "stdlib/idlelib/", "stdlib/tkinter/", "stdlib/lib2to3/",
                "stdlib/turtledemo/", "site-packages")
    assert not [n for n in names if any(part in n for part in excluded)]


def test_open_documents_python_docs_gives_str(python_docs_dir):
    from lmjax.data.sources import open_documents

    docs = open_documents({"source": "python_docs", "data_dir": python_docs_dir[0]}, "validation")
    assert len(docs) > 5
    assert all(isinstance(docs[i], str) and docs[i] for i in range(len(docs)))
    assert docs[0:2] == [docs[0], docs[1]] and docs[-1] == docs[len(docs) - 1]
    assert list(docs) == [docs[i] for i in range(len(docs))]
    with pytest.raises(IndexError, match="which has"):
        docs[len(docs)]


def test_prepared_corpus_also_reads_as_a_generic_tfds_source(python_docs_dir):
    from lmjax.data.sources import open_documents

    data_dir = python_docs_dir[0]
    name = f"python_docs/{python_docs.python_docs_config().name}"
    generic = open_documents({"source": f"tfds:{name}", "data_dir": data_dir}, "validation")
    embedded = open_documents({"source": "python_docs", "data_dir": data_dir}, "validation")
    assert len(generic) == len(embedded) > 0
    assert list(generic) == list(embedded)


def test_prepared_corpus_is_reused_not_rebuilt(python_docs_dir):
    data_dir = python_docs_dir[0]
    builder = python_docs.prepared_python_docs_builder(data_dir)
    files = sorted(os.listdir(builder.data_dir))
    mtimes = [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files]
    again = python_docs.prepared_python_docs_builder(data_dir)
    assert sorted(os.listdir(again.data_dir)) == files
    assert [os.path.getmtime(os.path.join(again.data_dir, f)) for f in files] == mtimes
    assert again.info.splits["train"].num_examples == builder.info.splits["train"].num_examples


def test_unknown_split_is_a_clear_error(python_docs_dir):
    with pytest.raises(ValueError, match=r"no split 'test'.*data.eval_split"):
        python_docs.python_docs_records("test", python_docs_dir[0])


def test_module_documentation_text_reads_docstrings_without_importing():
    source = textwrap.dedent('''
        """Module docstring."""
        import this_module_does_not_exist  # never imported: only parsed

        class Base:
            """A base class."""

            def method(self, x: int = 1) -> str:
                """Returns x as text."""

                def nested():
                    """Nested helpers are left out."""

            def undocumented(self):
                pass

        if PLATFORM == "win":
            def pick():
                """Picks one."""
        else:
            def pick():
                """Picks one."""

        try:
            import fast
        except ImportError:
            async def fetch(url, *, timeout=None):
                """Fetches url."""
    ''')
    text = python_docs.module_documentation_text(source, "pkg.mod")
    assert text == (
        "Module pkg.mod\n\nModule docstring.\n\n"
        "class Base\nA base class.\n\n"
        "def Base.method(self, x: int=1) -> str\nReturns x as text.\n\n"
        "def pick()\nPicks one.\n\n"
        "async def fetch(url, *, timeout=None)\nFetches url."
    )
    assert python_docs.module_documentation_text("x = 1\n", "empty") is None
    assert python_docs.module_documentation_text("def broken(:\n", "bad") is None


def test_subset_config_is_named_apart():
    assert python_docs.python_docs_config(40).name.endswith("-first40")
    assert python_docs.python_docs_config().name.split("-")[0] in ("cpython", "pypy")
    with pytest.raises(ValueError, match="positive count"):
        python_docs.python_docs_config(0)


@pytest.mark.slow
def test_two_processes_preparing_at_once_both_succeed(tmp_path):
    script = textwrap.dedent(f"""
        from lmjax.data.python_docs import prepared_python_docs_builder
        builder = prepared_python_docs_builder({str(tmp_path)!r}, max_documents=40)
        splits = builder.info.splits
        print(splits['train'].num_examples + splits['validation'].num_examples)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "40"
    config_dir = tmp_path / "python_docs" / python_docs.python_docs_config(40).name
    assert [p.name for p in config_dir.iterdir()] == ["1.0.0"]  # no leftover incomplete dirs
