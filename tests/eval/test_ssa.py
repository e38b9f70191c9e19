"""SSA: majority labels, Wilson and bootstrap intervals, labels files and labelling sheets."""

import csv
import json

import pytest
from scipy import stats

from lmjax.eval import ssa

L = ssa.RaterLabel


def _response(labels, model="meena", response="Sure, the park sounds fun."):
    return ssa.LabelledResponse(context=("Want to go out?",), response=response, model=model,
                                labels=tuple(L(*pair) for pair in labels))


# Five raters each (Meena's protocol). Majorities worked out by hand:
RESPONSES = [
    _response([(1, 1)] * 4 + [(1, 0)]),                    # sensible 5/5, specific 4/5: S, Sp
    _response([(1, 1), (1, 1), (1, 0), (0, 0), (0, 0)]),   # sensible 3/5, specific 2/5: S
    _response([(0, 1), (0, 1), (0, 0), (1, 1), (1, 1)]),   # sensible 2/5; (0, 1) -> not specific
    _response([(1, 1), (1, 1), (1, 1), (1, 0), (0, 0)]),   # sensible 4/5, specific 3/5: S, Sp
]


def test_a_non_sensible_label_is_never_specific():
    assert L(False, True) == L(False, False)
    assert L(True, True).specific


def test_majority_is_strict_and_a_tie_is_negative():
    assert ssa.majority_label(RESPONSES[0].labels) == L(True, True)
    assert ssa.majority_label(RESPONSES[1].labels) == L(True, False)
    assert ssa.majority_label(RESPONSES[2].labels) == L(False, False)
    assert ssa.majority_label([L(1, 1), L(1, 1), L(0, 0), L(0, 0)]) == L(False, False)
    with pytest.raises(ValueError, match="no rater labels"):
        ssa.majority_label([])


def test_wilson_interval_hand_computed_and_against_scipy():
    low, high = ssa.wilson_interval(3, 4)
    # z = 1.959964: centre (0.75 + z^2/8) / (1 + z^2/4) = 0.627527, half-width 0.326886.
    assert low == pytest.approx(0.300641, abs=1e-5)
    assert high == pytest.approx(0.954413, abs=1e-5)
    for k, n, c in ((0, 10, 0.95), (7, 13, 0.9), (20, 20, 0.99)):
        want = stats.binomtest(k, n).proportion_ci(confidence_level=c, method="wilson")
        assert ssa.wilson_interval(k, n, c) == pytest.approx((want.low, want.high), abs=1e-9)
    with pytest.raises(ValueError, match="successes"):
        ssa.wilson_interval(5, 4)


def test_report_figures_are_the_hand_computed_ones():
    report = ssa.ssa_report(RESPONSES, bootstrap_samples=2000, seed=1)
    assert report.num_responses == 4
    assert report.sensibleness == 0.75 and report.specificity == 0.5 and report.ssa == 0.625
    assert report.sensibleness_interval == pytest.approx(ssa.wilson_interval(3, 4))
    assert report.specificity_interval == pytest.approx(ssa.wilson_interval(2, 4))
    low, high = report.ssa_interval
    # Per-response SSA is (1, 0.5, 0, 1): resampled means run from 0 to 1 in steps of 1/8.
    assert 0.0 <= low < 0.625 < high <= 1.0
    assert (low * 8).is_integer() and (high * 8).is_integer()
    again = ssa.ssa_report(RESPONSES, bootstrap_samples=2000, seed=1)
    assert again == report


def test_bootstrap_interval_of_two_opposite_responses_spans_zero_to_one():
    responses = [_response([(1, 1)] * 5), _response([(0, 0)] * 5)]
    report = ssa.ssa_report(responses, bootstrap_samples=4000, seed=0)
    # A resample is all-bad, mixed or all-good with chances 1/4, 1/2, 1/4.
    assert report.ssa_interval == (0.0, 1.0)
    unanimous = ssa.ssa_report([_response([(1, 0)] * 5)] * 3, seed=0)
    assert unanimous.ssa == 0.5 and unanimous.ssa_interval == (0.5, 0.5)


def test_ssa_by_model_splits_responses():
    mixed = RESPONSES[:2] + [_response([(0, 0)] * 5, model="baseline")]
    reports = ssa.ssa_by_model(mixed, bootstrap_samples=10)
    assert sorted(reports) == ["baseline", "meena"]
    assert reports["meena"].ssa == 0.75 and reports["baseline"].ssa == 0.0


def test_labels_file_round_trip(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    ssa.write_labels(RESPONSES, path)
    assert ssa.read_labels(path) == RESPONSES


@pytest.mark.parametrize("record, match", [
    ("[1, 2]", "JSON object"),
    ('{"context": [], "response": "x", "model": "m"}', "lacks \\['labels'\\]"),
    ('{"context": [], "response": "x", "model": "m", "labels": []}', "non-empty"),
    ('{"context": [], "response": "x", "model": "m", "labels": [{"sensible": "yes"}]}',
     "sensible"),
    ('{"context": [1], "response": "x", "model": "m", "labels": [{"sensible": true}]}',
     "context"),
])
def test_bad_label_lines_are_errors_naming_the_line(tmp_path, record, match):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"context": "a", "response": "b", "model": "m",
                                "labels": [{"sensible": True, "specific": True}]}) + "\n"
                    + record + "\n")
    with pytest.raises(ValueError, match=match) as error:
        ssa.read_labels(str(path))
    assert "labels.jsonl:2" in str(error.value)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_sheet_written_filled_and_read_back_gives_the_labels(tmp_path, suffix):
    items = [{"context": ["Hi", "Hey there"], "response": "How are you?", "model": "meena"},
             {"context": "Any plans?", "response": "I like it.", "model": "baseline"}]
    rows = ssa.labelling_sheet(items, num_raters=3)
    assert len(rows) == 6 and rows[0]["sensible"] == "" and rows[3]["rater"] == 1
    answers = [("1", "1"), ("yes", "0"), ("1", "1"), ("0", ""), ("0", ""), ("1", "0")]
    for row, (sensible, specific) in zip(rows, answers):
        row["sensible"], row["specific"] = sensible, specific
    path = str(tmp_path / f"sheet.{suffix}")
    ssa.write_labelling_sheet(rows, path)
    labelled = ssa.read_labelling_sheet(path)
    assert [r.context for r in labelled] == [("Hi", "Hey there"), ("Any plans?",)]
    assert labelled[0].labels == (L(1, 1), L(1, 0), L(1, 1))
    assert labelled[1].labels == (L(0, 0), L(0, 0), L(1, 0))
    assert [ssa.majority_label(r.labels) for r in labelled] == [L(1, 1), L(0, 0)]


def test_unfilled_or_bad_sheet_cells_are_errors_naming_the_line(tmp_path):
    rows = ssa.labelling_sheet([{"context": "a", "response": "b", "model": "m"}], num_raters=2)
    rows[0]["sensible"], rows[0]["specific"] = "1", "0"
    path = str(tmp_path / "sheet.csv")
    ssa.write_labelling_sheet(rows, path)  # rater 2 left blank
    with pytest.raises(ValueError, match="'sensible'") as error:
        ssa.read_labelling_sheet(path)
    assert "sheet.csv:3" in str(error.value)
    rows[1]["sensible"], rows[1]["specific"] = "1", ""  # sensible but specific unanswered
    ssa.write_labelling_sheet(rows, path)
    with pytest.raises(ValueError, match="'specific'"):
        ssa.read_labelling_sheet(path)
    rows[1]["specific"], rows[1]["rater"] = "maybe", 2
    ssa.write_labelling_sheet(rows, path)
    with pytest.raises(ValueError, match="1 or 0"):
        ssa.read_labelling_sheet(path)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerow(["id", "response"])
    with pytest.raises(ValueError, match="lacks the column"):
        ssa.read_labelling_sheet(path)


def test_same_rater_twice_is_an_error(tmp_path):
    rows = ssa.labelling_sheet([{"context": "a", "response": "b", "model": "m"}], num_raters=2)
    for row in rows:
        row.update(rater=1, sensible=1, specific=1)
    path = str(tmp_path / "sheet.jsonl")
    ssa.write_labelling_sheet(rows, path)
    with pytest.raises(ValueError, match="twice"):
        ssa.read_labelling_sheet(path)
