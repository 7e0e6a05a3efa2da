"""Data specs: read a dataset format into the internal schemas (preference pairs, prompts).

A spec (YAML in ``data_specs/``) names a format, the axis and where ``is_safety`` comes from.
Files load through ``datasets`` from a local path (JSON, JSONL, gzip, CSV), or from the hub
when ``hub:`` is used and the user has a network. Bad rows (a missing field, empty text,
chosen == rejected, a rating out of range, prompts that differ between chosen and rejected)
raise an error naming the file and row, or are dropped and counted with ``on_bad_row: drop``.

Pair formats: ``hh_rlhf`` (Anthropic transcripts split at the last ``\\n\\nAssistant:``),
``pku_saferlhf``, ``jsonl`` (generic), ``sandbox`` (align's own records).
Prompt formats: ``instructions`` (JSON ``{instruction, category}``), ``csv`` (a prompt column),
``lines`` (text files, one prompt a line; the path may be a glob, the category read from each file's name).
"""

from __future__ import annotations

import json

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from align.config import Strict, read_yaml_model
from align.errors import AlignError
from align.records import RATINGS, PreferencePair, Prompt, from_dict

HH_ASSISTANT = "\n\nAssistant:"


class SafetyTag(BaseModel):
    """``is_safety`` from a column: true when the column's value is in ``true_values``."""

    model_config = ConfigDict(extra="forbid")
    column: str
    true_values: list[str]


class DataSpec(BaseModel):
    """How to read one dataset. Every field is documented once, here."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="a short name used in messages")
    kind: Literal["pairs", "prompts"]
    format: Literal["hh_rlhf", "pku_saferlhf", "jsonl", "sandbox", "instructions", "csv", "lines"]
    axis: Literal["helpfulness", "safety"] | None = Field(None, description="the pairs' axis (pairs only)")
    is_safety: bool | SafetyTag = Field(False, description="prompt-level tag: a constant or from a column")
    family: str | None = Field(None, description="prompt family when is_safety is false (e.g. borderline)")
    prompt_column: str = Field("prompt", description="csv: the column holding the prompt")
    category_column: str | None = Field(None, description="csv: a column holding the category")
    category_from_file: str | None = Field(None, description="lines: a regex whose first group, searched in each "
                                                             "file's name, is its prompts' category")
    unescape_newlines: bool = Field(False, description="lines: a literal backslash-n in a line is a line break")
    default_rating: str = Field("negligibly_better", description="rating of pairs that carry none (margin 0)")
    fields: dict[str, str] = Field(default_factory=dict, description="jsonl: internal name -> column name")
    hub: str | None = Field(None, description="a hub dataset id to load instead of a local file")
    split: str = Field("train", description="split to read from the hub")
    on_bad_row: Literal["error", "drop"] = "error"


@dataclass
class LoadReport:
    """Rows read, kept and dropped (by reason)."""

    rows: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)


class BadRow(ValueError):
    pass


def load_spec(path: str | Path) -> DataSpec:
    """The data spec in ``path``; a missing file, malformed YAML or a bad field is one error naming it."""
    return read_yaml_model(Path(path), DataSpec, "data spec")


def _rows(spec: DataSpec, path: Path | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, row) through ``datasets``."""
    import datasets

    datasets.disable_progress_bars()
    if spec.hub:
        ds = datasets.load_dataset(spec.hub, split=spec.split)
    elif spec.format == "lines":
        yield from _lines(spec, path)
        return
    else:
        if path is None or not path.is_file():
            raise AlignError(f"{path}: data file of spec {spec.name!r} not found")
        builder = "csv" if spec.format == "csv" else "json"
        if builder == "csv" and len(path.read_bytes()[:1 << 16].splitlines()) < 2 and path.stat().st_size < 1 << 16:
            raise AlignError(f"{path}: no rows (spec {spec.name!r}): a header at most")
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as e:  # datasets wraps parse errors in several types
            raise AlignError(f"{path}: cannot be read as {builder} ({type(e).__name__}: {e})") from None
    for i, row in enumerate(ds, start=1):
        yield i, row


def _lines(spec: DataSpec, path: Path | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows ``{text, category, file}`` of text files, one a line (numbered across the files, in name order)."""
    import re

    files = sorted(path.parent.glob(path.name)) if path is not None else []
    if not files:
        raise AlignError(f"{path}: no data file of spec {spec.name!r} matches")
    i = 0
    for f in files:
        category = ""
        if spec.category_from_file:
            m = re.search(spec.category_from_file, f.name)
            category = (m.group(1) if m and m.groups() else m.group(0)) if m else ""
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise AlignError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        for line in lines:
            i += 1
            text = line.replace("\\n", "\n") if spec.unescape_newlines else line
            yield i, {"text": text, "category": category, "file": f.name}


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise BadRow(f"missing field {key!r}")
    if not value.strip():
        raise BadRow(f"empty field {key!r}")
    return value


def _tag(spec: DataSpec, row: dict[str, Any]) -> bool:
    if isinstance(spec.is_safety, SafetyTag):
        if spec.is_safety.column not in row:
            raise BadRow(f"missing field {spec.is_safety.column!r}")
        return str(row[spec.is_safety.column]) in spec.is_safety.true_values
    return spec.is_safety


def _prompt(spec: DataSpec, i: int, text: str, is_safety: bool, category: str = "") -> Prompt:
    family = "harmful" if is_safety else (spec.family or "benign")
    return Prompt(id=f"{spec.name}-{i}", text=text, family=family, category=category or spec.name,
                  is_safety=is_safety, split="data")


def split_hh(transcript: str) -> tuple[str, str]:
    """(prompt, final answer) of an HH-RLHF transcript: split at the last ``\\n\\nAssistant:``."""
    cut = transcript.rfind(HH_ASSISTANT)
    if cut < 0:
        raise BadRow("no '\\n\\nAssistant:' turn")
    answer = transcript[cut + len(HH_ASSISTANT):].strip()
    if not answer:
        raise BadRow("empty final Assistant turn")
    return transcript[: cut + len(HH_ASSISTANT)], answer


def _pair(spec: DataSpec, i: int, row: dict[str, Any]) -> PreferencePair | None:
    axis = spec.axis or "helpfulness"
    safe = (None, None)
    if spec.format == "sandbox":
        return from_dict(PreferencePair, row)
    if spec.format == "hh_rlhf":
        p_c, chosen = split_hh(_text(row, "chosen"))
        p_r, rejected = split_hh(_text(row, "rejected"))
        if p_c != p_r:
            raise BadRow("chosen and rejected transcripts do not share the prompt")
        prompt, rating = p_c, spec.default_rating
    elif spec.format == "pku_saferlhf":
        prompt = _text(row, "prompt")
        responses = (_text(row, "response_0"), _text(row, "response_1"))
        key = "safer_response_id" if axis == "safety" else "better_response_id"
        if row.get(key) not in (0, 1):
            raise BadRow(f"field {key!r} must be 0 or 1")
        best = int(row[key])
        chosen, rejected = responses[best], responses[1 - best]
        flags = (row.get("is_response_0_safe"), row.get("is_response_1_safe"))
        if all(isinstance(f, bool) for f in flags):
            safe = (flags[best], flags[1 - best])
        rating = spec.default_rating
    else:  # jsonl
        f = {k: spec.fields.get(k, k) for k in ("prompt", "chosen", "rejected", "rating", "is_safety", "axis")}
        prompt, chosen, rejected = _text(row, f["prompt"]), _text(row, f["chosen"]), _text(row, f["rejected"])
        rating = row.get(f["rating"]) or spec.default_rating
        axis = row.get(f["axis"]) or axis
    if rating not in RATINGS:
        raise BadRow(f"rating {rating!r} is not one of {', '.join(RATINGS)}")
    if chosen.strip() == rejected.strip():
        raise BadRow("chosen == rejected")
    if safe[0] is False and safe[1] is True and axis == "safety":
        return None  # Llama 2 drops pairs where the unsafe response was preferred
    is_safety = bool(row.get(spec.fields.get("is_safety", "is_safety"))) if spec.format == "jsonl" else _tag(spec, row)
    bin_ = None
    if safe[0] is not None:
        bin_ = "both_safe" if all(safe) else ("safe_vs_unsafe" if safe[0] else "both_unsafe")
    return PreferencePair(prompt=_prompt(spec, i, prompt, is_safety), chosen=chosen, rejected=rejected,
                          rating=rating, axis=axis, safety_bin=bin_, chosen_safe=safe[0], rejected_safe=safe[1])


def load_pairs(spec: DataSpec, path: str | Path | None = None) -> tuple[list[PreferencePair], LoadReport]:
    """Preference pairs of a ``kind: pairs`` spec, with a report of what was dropped."""
    if spec.kind != "pairs":
        raise AlignError(f"spec {spec.name!r} reads prompts, not pairs")
    return _load(spec, Path(path) if path else None, _pair)


def load_prompts(spec: DataSpec, path: str | Path | None = None) -> tuple[list[Prompt], LoadReport]:
    """Prompts of a ``kind: prompts`` spec, each tagged ``is_safety`` from its source."""
    if spec.kind != "prompts":
        raise AlignError(f"spec {spec.name!r} reads pairs, not prompts")
    return _load(spec, Path(path) if path else None, _prompt_row)


def _prompt_row(s: DataSpec, i: int, row: dict[str, Any]) -> Prompt:
    if s.format == "instructions":
        return _prompt(s, i, _text(row, "instruction"), _tag(s, row), str(row.get("category") or ""))
    if s.format == "lines":
        return _prompt(s, i, _text(row, "text"), _tag(s, row), row["category"])
    category = str(row.get(s.category_column) or "") if s.category_column else ""
    return _prompt(s, i, _text(row, s.prompt_column), _tag(s, row), category)


def _head(spec: DataSpec, path: Path | None, n: int) -> list[tuple[int, dict[str, Any]]]:
    """The first ``n`` rows of a local file, read directly (not through ``datasets``, which would read
    it all): what the pre-flight check parses."""
    import csv
    import gzip
    import itertools

    if spec.format == "lines":
        return list(itertools.islice(_lines(spec, path), n))
    if path is None or not path.is_file():
        raise AlignError(f"{path}: data file of spec {spec.name!r} not found")
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        opener = gzip.open if path.suffix == ".gz" else open  # datasets reads .gz files as they are
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            if spec.format == "csv":
                return [(i, row) for i, row in enumerate(itertools.islice(csv.DictReader(f), n), start=1)]
            text = f.read(1 << 16)
            if text.lstrip().startswith("["):  # a JSON array, not JSON lines
                f.seek(0)
                return list(enumerate(json.load(f)[:n], start=1))
            f.seek(0)
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append((lineno, json.loads(line)))
                    except json.JSONDecodeError as e:
                        raise AlignError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if len(rows) == n:
                    break
    except UnicodeDecodeError as e:
        raise AlignError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AlignError(f"{path}: not valid JSON ({e.msg})") from None
    except (OSError, EOFError) as e:  # a truncated or mislabelled .gz
        raise AlignError(f"{path}: cannot be read ({e})") from None
    return [(i, r if isinstance(r, dict) else {}) for i, r in rows]


def peek(spec: DataSpec, path: Path | None, n: int = 20) -> int | None:
    """Parse the first ``n`` rows as ``load_pairs`` / ``load_prompts`` would: the number usable (None for a
    hub dataset, which is not read offline); a bad row is an AlignError naming it."""
    if spec.hub:
        return None
    parse = _pair if spec.kind == "pairs" else _prompt_row
    usable = 0
    for i, row in _head(spec, path, n):
        try:
            usable += parse(spec, i, row) is not None
        except BadRow as e:
            _bad_row(spec, str(path), i, e)
    return usable


def _bad_row(spec: DataSpec, where: str, i: int, e: BadRow) -> None:
    """A row the spec cannot read: an error naming it, unless the spec drops such rows."""
    if spec.on_bad_row == "error":
        raise AlignError(f"{where}: row {i}: {e} (spec {spec.name!r}; set on_bad_row: drop to skip)") from None


def _load(spec: DataSpec, path: Path | None, parse) -> tuple[list, LoadReport]:
    report, out = LoadReport(), []
    where = spec.hub or str(path)
    for i, row in _rows(spec, path):
        report.rows += 1
        try:
            item = parse(spec, i, row)
        except BadRow as e:
            _bad_row(spec, where, i, e)
            report.dropped[str(e)] += 1
            continue
        if item is None:
            report.dropped["unsafe response chosen over a safe one"] += 1
            continue
        out.append(item)
        report.kept += 1
    if not out:
        raise AlignError(f"{where}: no usable rows (spec {spec.name!r})")
    return out, report


class PromptSource(Strict):
    """Prompts read through a data spec (``data_specs/*.yaml``, a prompt format) from a local file: what the
    rs and ppo stages sample from on a real model's campaign."""

    spec: str = Field(description="path of the data spec YAML (format: instructions or csv)")
    path: str | None = Field(None, description="local data file; omit only when the spec names a hub dataset")
    limit: int | None = Field(None, ge=1, description="read at most this many prompts")


def source_files(src: PromptSource | None) -> list[Path]:
    """The files a round reading ``src`` depends on (its input hashes); none without a source."""
    return [Path(src.spec)] + ([Path(src.path)] if src.path else []) if src else []


def load_prompt_source(src: PromptSource, key: str) -> list[Prompt]:
    """The source's prompts, the first ``limit`` of them; none at all is an error naming ``key``."""
    prompts, _ = load_prompts(load_spec(src.spec), src.path)
    prompts = prompts[: src.limit] if src.limit else prompts
    if not prompts:
        raise AlignError(f"{src.path or src.spec}: {key}: no prompts")
    return prompts


class PairSource(Strict):
    """Preference pairs read through a data spec (``data_specs/*.yaml``) from a local file or the hub."""

    spec: str = Field(description="path of the data spec YAML (its axis says which model the pairs train)")
    path: str | None = Field(None, description="local data file; omit only when the spec names a hub dataset")
    limit: int | None = Field(None, ge=1, description="read at most this many pairs (after the shuffle)")
