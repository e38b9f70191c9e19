"""The embedded default corpus: Python's own documentation, prepared as a TFDS dataset.

Every experiment can train offline because this corpus ships with the Python that runs lmjax:

* the 79 reference-manual and language topics of ``pydoc_data.topics`` (the text ``help('if')``
  shows; one document per topic, named ``pydoc_data.topics/<topic>``), and
* the docstrings of the standard library, read from the ``.py`` source files with ``ast``, never
  by importing the modules (so nothing runs, and modules for other platforms are read too). One
  document per module, named by its path relative to the standard library, e.g.
  ``stdlib/json/decoder.py``.

**One document per module, not per docstring.** Most function docstrings are one or two lines; as
separate documents they would be dominated by their end-of-document tokens and carry no context.
A module's docstrings share a topic and vocabulary (``json.decoder``'s classes and methods talk
about the same decoder), so concatenated under pydoc-like headers (``class JSONDecoder(object)``,
``def JSONDecoder.decode(self, s, _w=WHITESPACE.match)``) they read like a reference page: long
coherent documents, which is what a language model learns long-range structure from. Splitting
by module also keeps a module's near-duplicate docstrings (a class and its methods) on one side of
the train / validation split, so the held-out loss is not flattered by leakage.

The split is a stable hash of the document name (``lmjax.data.splits``), about 5% held out.

**Origin and version dependence.** The text is the Python Software Foundation's documentation of
CPython, under the PSF licence; its content depends on the running Python's version (docstrings
change between releases), so the TFDS config is named for it (``cpython-3.11.7``) and a prepared
``data_dir`` can hold several Python versions side by side. With CPython 3.11.7 the corpus is 572
documents (542 train, 30 validation) and 2.24 M characters; preparing it takes ~3 s.

The builder lives in this package (not a script) because TFDS locates a builder's metadata
through its module's package directory; it writes ``array_record`` files (the TFRecord default
needs TensorFlow) and is read back with ``tfds.data_source``, which needs no TensorFlow and returns
``Text`` features as bytes. See /work/shared/specs/multimodal-and-offline-data.md, 2.3-2.4.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import platform
import sysconfig
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds

from lmjax.data.file_lock import held_file_lock
from lmjax.data.splits import DEFAULT_VALIDATION_FRACTION, TRAIN, VALIDATION, split_of_document

__all__ = [
    "EXCLUDED_STDLIB_DIRECTORIES",
    "PythonDocs",
    "PythonDocsConfig",
    "default_data_dir",
    "module_documentation_text",
    "prepared_python_docs_builder",
    "python_docs_config",
    "python_docs_documents",
    "python_docs_records",
    "stdlib_source_files",
]

# Directories of the standard library that are not documentation of the library itself: test
# suites, the IDLE and Tk GUI code, the removed 2to3 tool, demos, bundled third-party packages.
EXCLUDED_STDLIB_DIRECTORIES = frozenset({
    "__pycache__", "test", "tests", "idle_test", "idlelib", "tkinter", "lib2to3", "turtledemo",
    "site-packages", "dist-packages", "ensurepip", "pydoc_data", "lib-dynload", "__phello__",
})
# pydoc-like header lines give a signature at most this long; longer ones (a default that is a
# large literal) are shortened so that no header dwarfs its docstring.
_MAX_SIGNATURE_CHARS = 160


def default_data_dir() -> str:
    """Returns ``$LMJAX_DATA_DIR`` if set, else ``~/.cache/lmjax/tensorflow_datasets``."""
    configured = os.environ.get("LMJAX_DATA_DIR", "")
    if configured:
        return os.path.expanduser(configured)
    return os.path.join(os.path.expanduser("~"), ".cache", "lmjax", "tensorflow_datasets")


# --- Reading the documentation -------------------------------------------------------------


def stdlib_source_files(stdlib_dir: str | None = None) -> list[tuple[str, str]]:
    """Returns ``(name, path)`` of every standard-library ``.py`` file, sorted by name.

    Args:
        stdlib_dir: The standard library's directory; defaults to the running Python's
            (``sysconfig.get_paths()['stdlib']``).

    Returns:
        ``name`` is ``stdlib/<path relative to stdlib_dir>`` with ``/`` separators, the same on
        every machine; directories in ``EXCLUDED_STDLIB_DIRECTORIES`` (and build directories
        named ``config-*``) are skipped.
    """
    stdlib_dir = stdlib_dir or sysconfig.get_paths()["stdlib"]
    files = []
    for root, dirs, names in os.walk(stdlib_dir):
        dirs[:] = sorted(
            d for d in dirs if d not in EXCLUDED_STDLIB_DIRECTORIES and not d.startswith("config-")
        )
        for file_name in names:
            if file_name.endswith(".py"):
                path = os.path.join(root, file_name)
                relative = os.path.relpath(path, stdlib_dir).replace(os.sep, "/")
                files.append(("stdlib/" + relative, path))
    return sorted(files)


def _module_name(relative_path: str) -> str:
    """``json/decoder.py`` -> ``json.decoder``; ``json/__init__.py`` -> ``json``."""
    parts = relative_path[: -len(".py")].split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """Returns ``(args) -> returns`` of a function definition, shortened when very long."""
    arguments = ast.unparse(node.args)
    if len(arguments) > _MAX_SIGNATURE_CHARS:
        arguments = arguments[:_MAX_SIGNATURE_CHARS].rsplit(",", 1)[0] + ", ..."
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"({arguments}){returns}"


def _documented_definitions(body: Sequence[ast.stmt], prefix: str) -> Iterator[tuple[str, str]]:
    """Yields ``(header, docstring)`` for the documented classes and functions in ``body``.

    Classes are entered (their methods are documented as ``Class.method``), function bodies are
    not (nested helpers are implementation detail). Statements that only guard definitions
    (``if``/``try`` at module or class level, e.g. platform-specific versions) are entered too.
    """
    for node in body:
        if isinstance(node, ast.ClassDef):
            qualname = prefix + node.name
            bases = ", ".join(ast.unparse(base) for base in node.bases + node.keywords)
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                yield f"class {qualname}({bases})" if bases else f"class {qualname}", docstring
            yield from _documented_definitions(node.body, qualname + ".")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
                yield f"{keyword} {prefix}{node.name}{_signature(node)}", docstring
        elif isinstance(node, ast.If):
            yield from _documented_definitions(node.body + node.orelse, prefix)
        elif isinstance(node, ast.Try):
            handlers = [stmt for handler in node.handlers for stmt in handler.body]
            yield from _documented_definitions(
                node.body + handlers + node.orelse + node.finalbody, prefix
            )


def module_documentation_text(source: bytes | str, module_name: str) -> str | None:
    """Returns a module's docstrings as one pydoc-like text, or None if it has none.

    The text starts with ``Module <name>`` and the module docstring, followed by one entry per
    documented class or function: a header line (``class X(Base)``, ``def X.f(self, a=1)``) and
    the cleaned docstring (``inspect.cleandoc`` rules), entries separated by blank lines. Repeated
    entries (the same definition in both branches of an ``if``) appear once.

    Args:
        source: The module's source; bytes are decoded by ``ast`` (PEP 263 coding cookies).
        module_name: The dotted name for the first line.

    Returns:
        The text, or None when the source has no docstring at all or does not parse under the
        running Python (files written for another version).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return None
    entries = []
    module_docstring = ast.get_docstring(tree, clean=True)
    if module_docstring:
        entries.append(module_docstring)
    seen = set()
    for header, docstring in _documented_definitions(tree.body, prefix=""):
        entry = f"{header}\n{docstring}"
        if entry not in seen:
            seen.add(entry)
            entries.append(entry)
    if not entries:
        return None
    return f"Module {module_name}\n\n" + "\n\n".join(entries)


def python_docs_documents(
    max_documents: int | None = None, stdlib_dir: str | None = None
) -> Iterator[tuple[str, str]]:
    """Yields ``(name, text)`` for every document of the corpus, in name order.

    The ``pydoc_data.topics`` topics come first (``pydoc_data.topics/<topic>``), then one document
    per documented standard-library module (``stdlib/<relative path>``).

    Args:
        max_documents: Stop after this many documents (a quick subset for tests); None = all.
        stdlib_dir: The standard library to read; defaults to the running Python's.
    """
    from pydoc_data import topics  # the data module that backs help('topic'); nothing else runs

    count = 0
    for topic in sorted(topics.topics):
        text = topics.topics[topic].strip()
        if text:
            if max_documents is not None and count >= max_documents:
                return
            count += 1
            yield f"pydoc_data.topics/{topic}", text
    for name, path in stdlib_source_files(stdlib_dir):
        if max_documents is not None and count >= max_documents:
            return
        with open(path, "rb") as f:
            text = module_documentation_text(f.read(), _module_name(name[len("stdlib/"):]))
        if text:
            count += 1
            yield name, text


# --- The TFDS builder ----------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class PythonDocsConfig(tfds.core.BuilderConfig):
    """A :class:`PythonDocs` variant: the running Python's documentation, or a prefix of it.

    Attributes:
        max_documents: Keep only the first this many documents (tests); None = the whole corpus.
        validation_fraction: Share of documents (by stable name hash) in the validation split.
    """

    max_documents: int | None = None
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION


def python_docs_config(max_documents: int | None = None) -> PythonDocsConfig:
    """Returns the config for the running Python, named e.g. ``cpython-3.11.7[-first200]``."""
    if max_documents is not None and max_documents < 1:
        raise ValueError(
            f"max_documents={max_documents} must be a positive count, or None for the whole corpus."
        )
    name = f"{platform.python_implementation().lower()}-{platform.python_version()}"
    if max_documents is not None:
        name += f"-first{max_documents}"
    description = f"Documentation of {platform.python_implementation()} {platform.python_version()}"
    return PythonDocsConfig(name=name, description=description, max_documents=max_documents)


class PythonDocs(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the embedded corpus; features ``text`` and ``source`` (document name)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "pydoc_data topics + stdlib docstrings, one document per module."}
    BUILDER_CONFIGS = [python_docs_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Python's own documentation: the pydoc_data.topics reference topics and the "
                "standard library's docstrings (read with ast, one document per module). Content "
                "depends on the Python version named by the config."
            ),
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "source": tfds.features.Text()}
            ),
            homepage="https://docs.python.org/3/",
            license="Python Software Foundation License",
            metadata=tfds.core.MetadataDict(
                python_version=platform.python_version(),
                python_implementation=platform.python_implementation(),
            ),
            # Keep name order in the files: reading is shuffled downstream, and an unshuffled
            # validation split then reads in a fixed, readable order.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict]]]:
        del dl_manager  # nothing is downloaded: the documentation ships with Python
        config = self.builder_config
        by_split: dict[str, list[tuple[str, str]]] = {TRAIN: [], VALIDATION: []}
        for name, text in python_docs_documents(max_documents=config.max_documents):
            by_split[split_of_document(name, config.validation_fraction)].append((name, text))
        return {split: self._generate_examples(docs) for split, docs in by_split.items()}

    def _generate_examples(self, documents: list[tuple[str, str]]) -> Iterator[tuple[str, dict]]:
        for name, text in documents:
            yield name, {"text": text, "source": name}


def prepared_python_docs_builder(
    data_dir: str | None = None, max_documents: int | None = None
) -> PythonDocs:
    """Returns a :class:`PythonDocs` builder whose data is prepared in ``data_dir``.

    Prepares it on first use (a few seconds). Safe when several processes ask at once: they
    serialise on a lock file next to the data and only the first one prepares; TFDS itself writes
    into a temporary directory and renames it into place, so readers never see half a dataset.

    Args:
        data_dir: The TFDS data directory; defaults to :func:`default_data_dir`.
        max_documents: Prepare only the first this many documents (a separate config).
    """
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    config = python_docs_config(max_documents)
    # TFDS refuses a custom config object equal to a registered one: name the registered one.
    builder_config = config.name if max_documents is None else config
    builder = PythonDocs(data_dir=data_dir, config=builder_config)
    if builder.is_prepared():
        return builder
    lock_path = os.path.join(data_dir, "python_docs", f".{config.name}.lock")
    with held_file_lock(lock_path):
        builder = PythonDocs(data_dir=data_dir, config=builder_config)  # another may have won
        if not builder.is_prepared():
            builder.download_and_prepare(
                file_format="array_record",
                # No lookup of a hosted copy: nothing may touch the network.
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            )
    return PythonDocs(data_dir=data_dir, config=builder_config)


def python_docs_records(
    split: str, data_dir: str | None = None, max_documents: int | None = None
) -> Sequence[dict[str, Any]]:
    """Returns the random-access records (``{'text': bytes, 'source': bytes}``) of one split.

    Args:
        split: ``'train'`` or ``'validation'``, or a TFDS slice of them (``'train[:10%]'``).
        data_dir: The TFDS data directory; defaults to :func:`default_data_dir`.
        max_documents: Use the prefix config (tests).

    Raises:
        ValueError: For a split name the corpus does not have.
    """
    builder = prepared_python_docs_builder(data_dir, max_documents)
    base_split = split.split("[", 1)[0]
    if base_split not in builder.info.splits:
        raise ValueError(
            f"The python_docs corpus has no split {split!r}; its splits are "
            f"{sorted(builder.info.splits)} (set data.train_split / data.eval_split to one)."
        )
    return builder.as_data_source(split=split)
