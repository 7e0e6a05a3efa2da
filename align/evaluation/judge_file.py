"""Judging (prompt, response) pairs produced anywhere: ``align judge``.

``read_pairs`` reads a CSV (a header row) or JSONL file of rows with a prompt and a response field;
``verdict_record`` is the JSON object written for one row: the judge's ``label`` (its own class, or
``violation``/``safe``, ``refusal``/``compliance`` from its boolean labels), its ``score`` (the judge's
main number) and every label and score it gave.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from align.errors import AlignError
from align.evaluation.judge import Verdict
from align.records import iter_jsonl

# judge -> its main score, the ``score`` of each output row (default: its first score)
MAIN_SCORE = {"refusal": "p_refusal", "safety_rm": "r_s", "helpfulness_rm": "r_h", "llm": "expected_rating",
              "sandbox_gold": "gold_utility"}


def read_pairs(path: Path, prompt_field: str = "prompt", response_field: str = "response") -> list[dict[str, Any]]:
    """Rows of a CSV or JSONL file, each with the two text fields; an error names the file, row and field."""
    if not path.is_file():
        raise AlignError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(enumerate(csv.DictReader(f), start=2))  # row 1 is the header
        except UnicodeDecodeError as e:
            raise AlignError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except csv.Error as e:
            raise AlignError(f"{path}: cannot be read as CSV ({e})") from None
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = list(iter_jsonl(path))
    else:
        raise AlignError(f"{path}: expected a .csv or .jsonl file")
    if not rows:
        raise AlignError(f"{path}: no rows")
    out = []
    for line, row in rows:
        if not isinstance(row, dict):
            raise AlignError(f"{path}: row {line}: expected an object with {prompt_field!r} and {response_field!r}")
        for key in (prompt_field, response_field):
            if key not in row or row[key] is None:
                raise AlignError(f"{path}: row {line}: missing field {key!r}")
            if not isinstance(row[key], str):
                raise AlignError(f"{path}: row {line}: field {key!r} is not text")
        out.append({"line": line, "prompt": row[prompt_field], "response": row[response_field], "row": row})
    return out


def verdict_record(judge: str, v: Verdict) -> dict[str, Any]:
    """The output object of one judged row."""
    scores = dict(v.scores)
    if judge == "refusal" and "p_full_compliance" in scores:
        scores["p_refusal"] = round(1 - scores["p_full_compliance"], 4)
    label = v.label
    if label is None and v.violation is not None:
        label = "violation" if v.violation else "safe"
    elif label is None and v.refused is not None:
        label = "refusal" if v.refused else "compliance"
    key = MAIN_SCORE.get(judge) if MAIN_SCORE.get(judge) in scores else next(iter(scores), None)
    labels = {k: getattr(v, k) for k in ("violation", "refused", "correct") if getattr(v, k) is not None}
    return {"label": label, "score": scores.get(key) if key else None, **labels, "scores": scores}
