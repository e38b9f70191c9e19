"""Experiment files, command-line overrides and config validation.

An experiment is a Python file ``experiments/<family>/<name>.py`` with a function
``get_config(arg=None)`` that returns a locked ``ml_collections.ConfigDict`` (the layout big_vision
uses for its ``configs/*.py``). It is named on the command line with an optional argument string::

    lmjax train --config experiments/gpt/gpt2.py:size=tiny --config.train.steps=50 --workdir runs/x

Here ``size=tiny`` is handed to ``get_config`` (which parses it with :func:`parse_experiment_arg`),
and every ``--config.<dotted.key>=<value>`` replaces one existing field, parsed to that field's
type (:func:`apply_overrides`). :func:`validate` then checks the layout every experiment shares
(sections ``model``, ``objective``, ``data``, ``tokenizer``, ``optimizer``, ``train``, ``mesh``,
``rules``, ``generate``) and the cross-field arithmetic (e.g. the global batch splits into the
accumulation steps).

Every problem is raised as :class:`ConfigError` with a message that names the key and the fix, so
the command line can print it as one line.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

# The sections every experiment has, and the fields each must define (the contract's layout).
SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("family",),
    "objective": ("name",),
    "data": (
        "source", "data_dir", "train_split", "eval_split", "seq_len", "text_key",
        "document_mask", "shuffle_seed",
    ),
    "tokenizer": (
        "kind", "path", "vocab_size", "model_type", "byte_fallback", "character_coverage",
        "user_defined_symbols",
    ),
    "optimizer": (
        "name", "learning_rate", "b1", "b2", "eps", "weight_decay", "weight_decay_mask",
        "schedule", "warmup_steps", "end_learning_rate_fraction", "clip_grad_norm",
    ),
    "train": (
        "steps", "global_batch", "grad_accum", "seed", "eval_every", "eval_batches", "log_every",
        "checkpoint_every", "keep_checkpoints",
    ),
    "generate": ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "num_samples"),
}
LIST_SECTIONS = ("mesh", "rules")
# Sections a run may leave out: ``generate`` (sampling after training; encoders have none).
OPTIONAL_SECTIONS = ("generate",)
REQUIRED_SECTIONS = tuple(s for s in SECTION_FIELDS if s not in OPTIONAL_SECTIONS) + LIST_SECTIONS

# Choices the rest of lmjax understands; extend these when a new one is implemented.
OPTIMIZER_NAMES = ("adamw", "adafactor", "lamb")
SCHEDULES = ("warmup_cosine", "warmup_linear", "warmup_rsqrt", "constant")
WEIGHT_DECAY_MASKS = ("matrices", "all", "none")
TOKENIZER_KINDS = ("sentencepiece", "hf_json", "wordpiece")
DATA_FORMATS = ("lm", "segments")
SENTENCE_PAIRS = ("none", "nsp", "sop")
DATA_SOURCE_PREFIXES = ("tfds:", "text:", "jsonl:")
EMBEDDED_DATA_SOURCES = ("python_docs",)

_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")
_NONE_WORDS = ("none", "null")
_OVERRIDE_PREFIX = "--config."


class ConfigError(ValueError):
    """A config problem the user can fix; the message names the key and the fix."""


# --------------------------------------------------------------------------------------------
# Experiment files.
# --------------------------------------------------------------------------------------------


def parse_experiment_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses the ``k=v,k2=v2`` argument of an experiment file into a locked ConfigDict.

    Experiment files call this at the top of ``get_config`` so that every variant they accept is
    listed with its default and type in one place::

        def get_config(arg=None):
            arg = parse_experiment_arg(arg, size='tiny', sparse=False)

    Args:
        arg: the text after the ``:`` of ``path.py:k=v,...`` (``None`` or ``''`` for no argument).
        **defaults: every accepted key with its default value; a value given in ``arg`` is parsed
            to the type of its default (``bool`` accepts true/false/1/0/yes/no).

    Returns:
        A locked ConfigDict with every key of ``defaults``, the ones named in ``arg`` replaced.

    Raises:
        ConfigError: for a piece without ``=``, an unknown key or a value of the wrong type.
    """
    parsed = ml_collections.ConfigDict(dict(defaults))
    for piece in (arg or "").split(","):
        piece = piece.strip()
        if not piece:
            continue
        key, sep, text = piece.partition("=")
        key = key.strip()
        if not sep:
            example = next(iter(defaults.items()), ("size", "tiny"))
            raise ConfigError(
                f"Experiment argument {piece!r} has no '='; write it as key=value, "
                f"e.g. {example[0]}={example[1]}."
            )
        if key not in defaults:
            raise ConfigError(
                f"Unknown experiment argument {key!r}{_did_you_mean(key, defaults)}; "
                f"this experiment accepts: {', '.join(sorted(defaults)) or 'no arguments'}."
            )
        parsed[key] = _parse_typed(text.strip(), defaults[key], f"experiment argument {key!r}")
    return parsed.lock()


def resolve_experiment_path(path: str) -> str:
    """Returns the absolute path of an experiment file, looked up in the cwd then the repository.

    Args:
        path: a path like ``experiments/gpt/gpt2.py``, absolute or relative to the working
            directory or to the directory that holds the ``lmjax`` package (a source checkout).

    Raises:
        ConfigError: if no such file exists in either place, or it is not a ``.py`` file.
    """
    if not path.endswith(".py"):
        raise ConfigError(
            f"Experiment {path!r} is not a .py file; pass a path like "
            "experiments/gpt/gpt2.py:size=tiny."
        )
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [os.path.abspath(path)]
    if not os.path.isabs(path):
        candidates.append(os.path.join(repo_root, path))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    places = os.getcwd() if os.getcwd() == repo_root else f"{os.getcwd()} and {repo_root}"
    raise ConfigError(
        f"Experiment file {path!r} not found (looked in {places}); "
        "pass a path like experiments/gpt/gpt2.py:size=tiny."
    )


def split_experiment_spec(spec: str) -> tuple[str, str | None]:
    """Splits ``'path.py:k=v,...'`` into ``('path.py', 'k=v,...')`` (``None`` when no argument)."""
    index = spec.find(".py:")
    if index < 0:
        return spec, None
    return spec[: index + 3], spec[index + 4 :]


def load_experiment(spec: str) -> ml_collections.ConfigDict:
    """Loads an experiment file and returns its locked config.

    Args:
        spec: ``'experiments/gpt/gpt2.py'`` or ``'experiments/gpt/gpt2.py:size=tiny,foo=bar'``;
            the text after ``.py:`` is passed to the file's ``get_config`` as its only argument.

    Returns:
        The locked ConfigDict that ``get_config`` returned.

    Raises:
        ConfigError: if the file is missing, has no ``get_config``, or does not return a
            ConfigDict; errors raised by ``get_config`` itself (e.g. a bad argument) propagate.
    """
    path, arg = split_experiment_spec(spec)
    path = resolve_experiment_path(path)
    digest = hashlib.sha1(path.encode()).hexdigest()[:10]
    module_name = f"lmjax_experiment_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(
            f"Experiment file {path} defines no get_config(arg=None); add one that returns an "
            "ml_collections.ConfigDict."
        )
    config = get_config(arg) if arg is not None else get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config in {path} returned {type(config).__name__}; it must return an "
            "ml_collections.ConfigDict."
        )
    return config.lock()


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """Returns the config as JSON text (tuples become lists, references are resolved)."""
    return config.to_json(sort_keys=True)


def config_from_json(text: str | Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Rebuilds a locked config from :func:`config_to_json` text (or the already-decoded dict).

    Lists of pairs (``mesh``, ``rules``) come back as lists of tuples, and list-valued leaves as
    tuples, so the result compares and overrides like the original experiment's config.
    """
    data = json.loads(text) if isinstance(text, str) else dict(text)
    return ml_collections.ConfigDict(_tuples_from_json(data)).lock()


def _tuples_from_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _tuples_from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_tuples_from_json(item) for item in value]
        if items and all(isinstance(item, tuple) for item in items):
            return items  # a table such as mesh / rules stays a list of rows
        return tuple(items)
    return value


# --------------------------------------------------------------------------------------------
# Overrides.
# --------------------------------------------------------------------------------------------


def apply_overrides(
    config: ml_collections.ConfigDict, argv: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies ``--config.<dotted.key>=<value>`` overrides to ``config`` in place.

    Both ``--config.train.steps=50`` and ``--config.train.steps 50`` are accepted; a bool field
    given without a value (``--config.data.document_mask``) is set to True. Each value is parsed
    to the existing field's type: int, float, bool (true/false/1/0/yes/no), str, tuple/list
    (a Python literal such as ``"('a', 'b')"``), and ``None`` for fields whose value is None (a
    None field with no type takes any Python literal, else the text as a string).

    Args:
        config: the experiment config (locked is fine: only existing fields are replaced).
        argv: the override tokens, in command-line order.

    Returns:
        ``config``, for chaining.

    Raises:
        ConfigError: for a token that is not a ``--config.`` override, an unknown key (the message
            names the full dotted key and the closest valid keys), a section used as a value,
            or a value that does not parse as the field's type.
    """
    tokens = list(argv)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith(_OVERRIDE_PREFIX):
            raise ConfigError(
                f"Unexpected argument {token!r}; config overrides look like "
                "--config.train.steps=100 (run with --help for the other flags)."
            )
        key, sep, text = token[len(_OVERRIDE_PREFIX) :].partition("=")
        if not sep:
            next_is_value = index < len(tokens) and not tokens[index].startswith("--")
            if next_is_value:
                text = tokens[index]
                index += 1
            elif isinstance(_lookup_field(config, key)[2], bool):
                text = "true"
            else:
                raise ConfigError(
                    f"--config.{key} has no value; write --config.{key}=VALUE."
                )
        set_override(config, key, text)
    return config


def set_override(config: ml_collections.ConfigDict, dotted_key: str, text: str) -> None:
    """Sets one existing field, named by its dotted key, from command-line text.

    Args:
        config: the config to change in place.
        dotted_key: e.g. ``'optimizer.learning_rate'`` (without the ``config.`` prefix).
        text: the value as typed, parsed to the field's type.

    Raises:
        ConfigError: for an unknown key, a section, or a value of the wrong type.
    """
    parent, leaf, current = _lookup_field(config, dotted_key)
    if isinstance(current, ml_collections.ConfigDict):
        fields = ", ".join(sorted(current.keys()))
        raise ConfigError(
            f"--config.{dotted_key} is a section, not a field; override one of its fields "
            f"instead ({fields})."
        )
    field_type = parent.get_type(leaf)
    value = _parse_typed(text, current, f"--config.{dotted_key}", field_type=field_type)
    try:
        parent[leaf] = value
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--config.{dotted_key}: cannot set {text!r}: {error}") from None


def _lookup_field(
    config: ml_collections.ConfigDict, dotted_key: str
) -> tuple[ml_collections.ConfigDict, str, Any]:
    """Returns (parent ConfigDict, leaf name, current value) of a dotted key, or raises."""
    parts = dotted_key.split(".")
    if not dotted_key or any(not part for part in parts):
        raise ConfigError(
            f"--config.{dotted_key} is not a valid key; write it like --config.train.steps=100."
        )
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ConfigError(_unknown_key_message(config, dotted_key, ".".join(parts[:depth])))
        if depth == len(parts) - 1:
            return node, part, node[part]
        node = node[part]
    raise AssertionError("unreachable")


def _unknown_key_message(config: ml_collections.ConfigDict, dotted_key: str, valid_prefix: str):
    keys = dotted_keys(config)
    last = dotted_key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(dotted_key, keys, n=3, cutoff=0.6)
    close += [key for key in keys if key.rsplit(".", 1)[-1] == last and key not in close]
    where = f" (section config.{valid_prefix} exists)" if valid_prefix else ""
    if close:
        hint = "did you mean " + " or ".join(f"--config.{key}" for key in close[:4]) + "?"
    else:
        sections = sorted(config.keys())
        hint = f"top-level sections are: {', '.join(sections)}."
    return f"Unknown config key --config.{dotted_key}{where}; {hint}"


def dotted_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Returns every section and field of ``config`` as a dotted key, e.g. ``'train.steps'``."""
    keys = []
    for key in config.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(dotted_keys(value, full + "."))
    return keys


def _did_you_mean(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_typed(text: str, current: Any, what: str, field_type: type | None = None) -> Any:
    """Parses ``text`` to the type of ``current`` (or ``field_type``); raises ConfigError."""
    field_type = field_type if field_type is not None else type(current)
    lowered = text.strip().lower()
    if lowered in _NONE_WORDS and current is None:  # a None field or an unset typed placeholder
        return None
    if field_type is type(None):  # no type to go by: a Python literal, else the plain text
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def wrong(expected: str, example: str) -> ConfigError:
        return ConfigError(f"{what} expects {expected}, got {text!r}; e.g. {example}.")

    if field_type is bool:
        if lowered in _TRUE_WORDS:
            return True
        if lowered in _FALSE_WORDS:
            return False
        raise wrong("a bool", "true or false")
    if field_type is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            as_float = float(text)
        except ValueError:
            raise wrong("an int", "100") from None
        if as_float.is_integer():
            return int(as_float)
        raise wrong("an int", "100")
    if field_type is float:
        try:
            return float(text)
        except ValueError:
            raise wrong("a float", "3e-4") from None
    if field_type is str:
        return text
    if field_type in (tuple, list):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise wrong(f"a {field_type.__name__} literal", "\"('a', 'b')\"") from None
        if isinstance(value, (tuple, list)):
            return field_type(value)
        raise wrong(f"a {field_type.__name__} literal", "\"('a', 'b')\"")
    try:  # any other type: a Python literal that is an instance of it
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise wrong(f"a {field_type.__name__}", "a Python literal") from None
    if not isinstance(value, field_type):
        raise wrong(f"a {field_type.__name__}", "a Python literal of that type")
    return value


# --------------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks the experiment layout and cross-field sanity; raises on the first pass's problems.

    Checks that every section exists with the fields the contract names, that the choices
    (optimizer, schedule, tokenizer kind, data source) are known, that the numbers make sense
    (steps > 0, global batch divisible by grad_accum, probabilities in range, ...), that the mesh
    and rules tables are well formed, and that the tokenizer fits into the model's vocabulary.

    Args:
        config: an experiment config.

    Returns:
        ``config``, for chaining.

    Raises:
        ConfigError: listing every problem found, each with the key and what to do.
    """
    problems = _missing_sections(config)
    if not problems:
        problems += _numeric_problems(config)
        problems += _choice_problems(config)
        problems += _mesh_problems(config.mesh) + _rules_problems(config.rules)
    if problems:
        raise ConfigError("Invalid config: " + "; ".join(problems))
    return config


def _missing_sections(config: ml_collections.ConfigDict) -> list[str]:
    problems = []
    for section in REQUIRED_SECTIONS + OPTIONAL_SECTIONS:
        if section in OPTIONAL_SECTIONS and section not in config:
            continue
        if section not in config:
            problems.append(
                f"missing section config.{section} (every experiment defines "
                f"{', '.join(REQUIRED_SECTIONS)})"
            )
            continue
        value = config[section]
        if section in LIST_SECTIONS:
            if not isinstance(value, (list, tuple)):
                problems.append(f"config.{section} must be a list of pairs, got {value!r}")
            continue
        if not isinstance(value, ml_collections.ConfigDict):
            problems.append(f"config.{section} must be a ConfigDict section, got {value!r}")
            continue
        missing = [field for field in SECTION_FIELDS[section] if field not in value]
        if missing:
            problems.append(
                f"config.{section} lacks field(s) {', '.join(missing)}; add them to the "
                "experiment file"
            )
    return problems


# (dotted key, test, what the value must be): one message per failed test.
_RANGE_CHECKS: tuple[tuple[str, Any, str], ...] = (
    ("train.steps", lambda v: v > 0, "> 0"),
    ("train.global_batch", lambda v: v > 0, "> 0"),
    ("train.grad_accum", lambda v: v >= 1, ">= 1"),
    ("train.eval_every", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("train.eval_batches", lambda v: v >= 0, ">= 0 (0 = the whole held-out split)"),
    ("train.log_every", lambda v: v > 0, "> 0"),
    ("train.checkpoint_every", lambda v: v >= 0, ">= 0 (0 = only at the end)"),
    ("train.keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("data.seq_len", lambda v: v > 0, "> 0"),
    ("optimizer.learning_rate", lambda v: v > 0, "> 0"),
    ("optimizer.b1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.b2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.eps", lambda v: v >= 0, ">= 0"),
    ("optimizer.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optimizer.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("optimizer.end_learning_rate_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("optimizer.clip_grad_norm", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("generate.max_new_tokens", lambda v: v >= 0, ">= 0"),
    ("generate.temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
    ("generate.top_k", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("generate.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("generate.num_samples", lambda v: v >= 1, ">= 1"),
)


def _numeric_problems(config: ml_collections.ConfigDict) -> list[str]:
    train, opt = config.train, config.optimizer
    problems = []
    for key, test, requirement in _RANGE_CHECKS:
        if key.split(".")[0] not in config:  # an optional section left out
            continue
        value = config[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"config.{key} must be a number, got {value!r}")
        elif not test(value):
            problems.append(f"config.{key} must be {requirement}, got {value}")
    if problems:
        return problems
    if train.global_batch % train.grad_accum:
        problems.append(
            f"config.train.global_batch ({train.global_batch}) must be divisible by "
            f"config.train.grad_accum ({train.grad_accum}); change one of them"
        )
    if opt.warmup_steps > train.steps:
        problems.append(
            f"config.optimizer.warmup_steps ({opt.warmup_steps}) exceeds config.train.steps "
            f"({train.steps}); lower --config.optimizer.warmup_steps or raise --config.train.steps"
        )
    model_vocab = config.model.get("vocab_size")
    if isinstance(model_vocab, int) and config.tokenizer.vocab_size > model_vocab:
        problems.append(
            f"config.tokenizer.vocab_size ({config.tokenizer.vocab_size}) exceeds "
            f"config.model.vocab_size ({model_vocab}); make the model's vocabulary at least as "
            "large"
        )
    for length_field in ("max_len", "max_length", "max_positions", "n_positions", "n_ctx"):
        max_len = config.model.get(length_field)
        if isinstance(max_len, int) and config.data.seq_len > max_len:
            problems.append(
                f"config.data.seq_len ({config.data.seq_len}) exceeds config.model.{length_field} "
                f"({max_len}); shorten the sequences or enlarge the model's positions"
            )
    return problems


def _choice_problems(config: ml_collections.ConfigDict) -> list[str]:
    problems = []
    choices = [
        ("optimizer.name", config.optimizer.name, OPTIMIZER_NAMES),
        ("optimizer.schedule", config.optimizer.schedule, SCHEDULES),
        ("optimizer.weight_decay_mask", config.optimizer.weight_decay_mask, WEIGHT_DECAY_MASKS),
        ("tokenizer.kind", config.tokenizer.kind, TOKENIZER_KINDS),
    ]
    for key, allowed in (("data.format", DATA_FORMATS), ("data.sentence_pairs", SENTENCE_PAIRS)):
        if key.split(".")[1] in config.data:
            choices.append((key, config[key], allowed))
    for key, value, allowed in choices:
        if value not in allowed:
            problems.append(
                f"config.{key} is {value!r}{_did_you_mean(str(value), allowed)}; "
                f"choose one of {', '.join(allowed)}"
            )
    source = config.data.source
    known_source = source in EMBEDDED_DATA_SOURCES or any(
        source.startswith(prefix) and len(source) > len(prefix) for prefix in DATA_SOURCE_PREFIXES
    )
    if not known_source:
        problems.append(
            f"config.data.source is {source!r}; use one of {', '.join(EMBEDDED_DATA_SOURCES)}, "
            "'tfds:<name>[/config]', 'text:<glob>' or 'jsonl:<glob>'"
        )
    if config.tokenizer.kind in ("hf_json", "wordpiece") and not config.tokenizer.path:
        file = "tokenizer.json" if config.tokenizer.kind == "hf_json" else "vocab.txt"
        problems.append(
            f"config.tokenizer.kind is {config.tokenizer.kind!r} but config.tokenizer.path is "
            f"empty; pass the {file} file with --config.tokenizer.path=/path/to/{file}"
        )
    return problems


def _mesh_problems(mesh: Sequence[Any]) -> list[str]:
    problems, names, inferred = [], [], 0
    for row in mesh:
        if not (isinstance(row, (list, tuple)) and len(row) == 2 and isinstance(row[0], str)
                and isinstance(row[1], int) and (row[1] >= 1 or row[1] == -1)):
            problems.append(
                f"config.mesh entry {row!r} must be (axis_name, size) with size >= 1 or -1, "
                "e.g. ('data', -1)"
            )
            continue
        names.append(row[0])
        inferred += row[1] == -1
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(f"config.mesh names axis {', '.join(duplicates)} more than once")
    if inferred > 1:
        problems.append("config.mesh may give size -1 (all remaining devices) to one axis only")
    if not mesh:
        problems.append("config.mesh is empty; use e.g. [('data', -1), ('fsdp', 1), ('tensor', 1)]")
    return problems


def _rules_problems(rules: Sequence[Any]) -> list[str]:
    problems = []
    for row in rules:
        target_ok = False
        if isinstance(row, (list, tuple)) and len(row) == 2 and isinstance(row[0], str):
            target = row[1]
            target_ok = target is None or isinstance(target, str) or (
                isinstance(target, (list, tuple)) and all(isinstance(t, str) for t in target)
            )
        if not target_ok:
            problems.append(
                f"config.rules entry {row!r} must be (logical_name, mesh_axis | tuple | None), "
                "e.g. ('batch', ('data', 'fsdp'))"
            )
    return problems
