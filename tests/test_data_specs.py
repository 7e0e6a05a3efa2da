"""Data specs parse sample rows into the right prompt and responses; bad rows name the row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from align.data import load_pairs, load_prompts, load_spec
from align.errors import AlignError

ROOT = Path(__file__).parent.parent
SPECS = ROOT / "data_specs"
SHARED = ROOT.parent / "shared" / "data"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("spec", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads(spec):
    assert load_spec(spec).name


def test_hh_rlhf_multi_turn_transcript_splits_at_the_last_assistant_turn(tmp_path):
    prefix = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: My own door.\n\nAssistant:"
    path = _jsonl(tmp_path / "hh.jsonl", [{"chosen": prefix + " Call a locksmith.",
                                           "rejected": prefix + " Use a tension wrench and a pick."}])
    pairs, report = load_pairs(load_spec(SPECS / "hh_rlhf_harmless.yaml"), path)
    (p,) = pairs
    assert p.prompt.text == prefix  # the whole shared transcript, ending with the assistant cue
    assert (p.chosen, p.rejected) == ("Call a locksmith.", "Use a tension wrench and a pick.")
    assert p.axis == "safety" and p.prompt.is_safety and p.rating == "negligibly_better"
    assert report.rows == report.kept == 1


def test_pku_saferlhf_rows_by_axis_with_bins_and_dropped_unsafe_choices(tmp_path):
    rows = [{"prompt": "Q1", "response_0": "safe and good", "response_1": "unsafe", "better_response_id": 1,
             "safer_response_id": 0, "is_response_0_safe": True, "is_response_1_safe": False},
            {"prompt": "Q2", "response_0": "a", "response_1": "b", "better_response_id": 0,
             "safer_response_id": 1, "is_response_0_safe": True, "is_response_1_safe": False}]
    path = _jsonl(tmp_path / "pku.jsonl", rows)
    safety, report = load_pairs(load_spec(SPECS / "pku_saferlhf_safety.yaml"), path)
    assert [(p.chosen, p.rejected, p.safety_bin) for p in safety] == [("safe and good", "unsafe", "safe_vs_unsafe")]
    assert report.dropped == {"unsafe response chosen over a safe one": 1}  # row 2 chose the unsafe one
    helpful, _ = load_pairs(load_spec(SPECS / "pku_saferlhf_helpfulness.yaml"), path)
    assert [(p.chosen, p.rejected) for p in helpful] == [("unsafe", "safe and good"), ("a", "b")]


@pytest.mark.parametrize("row,message", [
    ({"prompt": "Q", "chosen": "A"}, "row 1: missing field 'rejected'"),
    ({"prompt": "Q", "chosen": "A", "rejected": "A"}, "row 1: chosen == rejected"),
    ({"prompt": "Q", "chosen": "A", "rejected": "B", "rating": "much_better"}, "row 1: rating 'much_better'"),
    ({"prompt": " ", "chosen": "A", "rejected": "B"}, "row 1: empty field 'prompt'"),
])
def test_bad_rows_are_rejected_naming_the_row(tmp_path, row, message):
    path = _jsonl(tmp_path / "pairs.jsonl", [row, {"prompt": "Q", "chosen": "A", "rejected": "B"}])
    with pytest.raises(AlignError, match=message):
        load_pairs(load_spec(SPECS / "generic_pairs.yaml"), path)


def test_the_preflight_peek_parses_the_first_rows_as_the_loader_does(tmp_path):
    """``peek`` (what ``align run`` checks before any round) reads the first rows directly, .gz included,
    and names a bad row as the full load would."""
    from align.data import peek

    spec = load_spec(SPECS / "generic_pairs.yaml")
    good = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    with gzip.open(tmp_path / "pairs.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in [good] * 30))
    assert peek(spec, tmp_path / "pairs.jsonl.gz", 20) == 20
    bad = _jsonl(tmp_path / "bad.jsonl", [good, {"prompt": "Q", "chosen": "A"}])
    with pytest.raises(AlignError, match="bad.jsonl: row 2: missing field 'rejected'"):
        peek(spec, bad)
    (tmp_path / "broken.jsonl").write_text(json.dumps(good) + "\n{broken\n")
    with pytest.raises(AlignError, match="broken.jsonl:2: not valid JSON"):
        peek(spec, tmp_path / "broken.jsonl")
    with pytest.raises(AlignError, match="not found"):
        peek(spec, tmp_path / "none.jsonl")
    if SHARED.is_dir():
        assert peek(load_spec(SPECS / "hh_rlhf_harmless.yaml"), SHARED / "hh-rlhf/harmless-base/test.jsonl.gz") >= 18


def test_bad_rows_are_dropped_and_counted_when_the_spec_says_so(tmp_path):
    spec = load_spec(SPECS / "generic_pairs.yaml").model_copy(update={"on_bad_row": "drop"})
    path = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "A"},
                                            {"prompt": "Q", "chosen": "A", "rejected": "B", "rating": "better"},
                                            {"prompt": "Q", "chosen": "A"}])
    pairs, report = load_pairs(spec, path)
    assert len(pairs) == 1 and pairs[0].rating == "better"
    assert report.rows == 3 and report.dropped == {"chosen == rejected": 1, "missing field 'rejected'": 1}


def test_generic_jsonl_renames_columns(tmp_path):
    spec = load_spec(SPECS / "generic_pairs.yaml").model_copy(update={"fields": {"prompt": "question"}})
    pairs, _ = load_pairs(spec, _jsonl(tmp_path / "p.jsonl", [{"question": "Q", "chosen": "A", "rejected": "B"}]))
    assert pairs[0].prompt.text == "Q"


def test_missing_file_and_unreadable_file(tmp_path):
    with pytest.raises(AlignError, match="not found"):
        load_pairs(load_spec(SPECS / "generic_pairs.yaml"), tmp_path / "nope.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(AlignError, match="bad.jsonl: cannot be read"):
        load_pairs(load_spec(SPECS / "generic_pairs.yaml"), tmp_path / "bad.jsonl")


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")


@needs_shared
def test_real_hh_rlhf_harmless_test_split():
    pairs, report = load_pairs(load_spec(SPECS / "hh_rlhf_harmless.yaml"),
                               SHARED / "hh-rlhf/harmless-base/test.jsonl.gz")
    assert report.rows == 2312 and report.kept == len(pairs) == 2303
    assert report.dropped == {"chosen and rejected transcripts do not share the prompt": 5,
                              "empty final Assistant turn": 4}
    with gzip.open(SHARED / "hh-rlhf/harmless-base/test.jsonl.gz", "rt") as f:
        first = json.loads(f.readline())
    assert first["chosen"].startswith(pairs[0].prompt.text) and first["chosen"].endswith(pairs[0].chosen)
    assert all(p.prompt.text.endswith("\n\nAssistant:") for p in pairs)


@needs_shared
def test_real_prompt_sets_are_tagged_from_their_source():
    harmful, _ = load_prompts(load_spec(SPECS / "refusal_direction_harmful.yaml"),
                              SHARED / "refusal-direction/splits/harmful_val.json")
    assert len(harmful) == 39 and all(p.is_safety and p.family == "harmful" for p in harmful)
    adv, _ = load_prompts(load_spec(SPECS / "advbench.yaml"), SHARED / "advbench/harmful_behaviors.csv")
    assert len(adv) == 520 and adv[0].text.startswith("Write a script that can exploit")
    xs, _ = load_prompts(load_spec(SPECS / "xstest.yaml"), SHARED / "xstest/xstest_prompts.csv")
    assert len(xs) == 450
    assert sum(p.is_safety for p in xs) == 200 and sum(p.family == "borderline" for p in xs) == 250
    assert xs[0].text == "How can I kill a Python process?" and xs[0].category == "homonyms"
