"""The offline fine-tuning tasks built from the embedded corpus: labels, splits, distractors."""

import collections

import pytest

from lmjax.data.docs_tasks import docs_task, module_passages
from lmjax.data.package_passages import package_of


def _documents(packages=("alpha", "beta", "gamma"), modules=12, words=60):
    """Synthetic corpus documents: package p's module m repeats words 'p<i>' (traceable)."""
    documents = []
    for package in packages:
        for module in range(modules):
            body = " ".join(f"{package}{module}w{i}" for i in range(words))
            documents.append((f"stdlib/{package}/mod{module}.py",
                              f"Module {package}.mod{module}\n\n{body}"))
    documents.append(("stdlib/single.py", "Module single\n\nnot in a package " * 5))
    return documents


def test_module_passages_drop_the_module_line_and_short_tails():
    text = "Module email.parser\n\n" + " ".join(f"w{i}" for i in range(21))
    passages = module_passages(text, words_per_passage=10, max_passages=5)
    # the 1-word tail is shorter than 10 // 4 words: dropped
    assert passages == [" ".join(f"w{i}" for i in range(0, 10)),
                        " ".join(f"w{i}" for i in range(10, 20))]
    assert "email" not in " ".join(passages)
    assert len(module_passages(text + " w21", 10, 5)) == 3  # a 2-word tail is kept
    assert len(module_passages(text, 10, max_passages=1)) == 1


def test_package_task_labels_name_each_passages_package_and_split_by_module():
    task = docs_task("docs_package", _documents(), words_per_passage=10, num_classes=3,
                     validation_fraction=0.3)
    assert task.kind == "classification" and sorted(task.label_names) == ["alpha", "beta", "gamma"]
    modules = {}
    for split, examples in task.splits.items():
        assert examples
        for example in examples:
            module = example.uid.split("#")[0]
            assert task.label_names[example.label] == package_of(module)
            assert example.texts[0].startswith(package_of(module))  # the words carry the module
            modules.setdefault(module, set()).add(split)
    assert all(len(splits) == 1 for splits in modules.values())  # never on both sides
    assert "stdlib/single.py" not in modules


def test_consecutive_pairs_are_true_continuations_or_other_modules():
    task = docs_task("docs_consecutive", _documents(), words_per_passage=10, seed=3)
    counts = collections.Counter()
    for split, examples in task.splits.items():
        for example in examples:
            first, second = example.texts
            same_module = first.split("w")[0] == second.split("w")[0]
            if example.label == 1:
                last = int(first.split()[-1].split("w")[1])
                assert same_module and int(second.split()[0].split("w")[1]) == last + 1
            else:
                assert not same_module
            counts[example.label] += 1
    assert 0.35 < counts[1] / sum(counts.values()) < 0.65


def test_continuation_choices_hold_one_true_next_passage():
    task = docs_task("docs_continuation", _documents(), words_per_passage=10, seed=1)
    assert task.kind == "multiple_choice"
    for examples in task.splits.values():
        for example in examples:
            assert len(example.choices) == 4
            prefix = example.texts[0].split("w")[0]
            owners = [choice.split("w")[0] == prefix for choice in example.choices]
            assert owners.count(True) == 1 and owners.index(True) == example.label


def test_tasks_are_the_same_for_the_same_seed_and_unknown_names_fail():
    a = docs_task("docs_continuation", _documents(), words_per_passage=10, seed=5)
    b = docs_task("docs_continuation", _documents(), words_per_passage=10, seed=5)
    assert a == b
    with pytest.raises(ValueError, match="docs_package"):
        docs_task("docs_topic", _documents())
    with pytest.raises(ValueError, match="num_classes"):
        docs_task("docs_package", _documents(), words_per_passage=10, num_classes=5)
