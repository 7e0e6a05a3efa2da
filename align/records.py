"""Small typed records that stages exchange: prompts, demonstrations, preference pairs.

Every record round-trips through one JSON object per line (``to_dict`` / ``from_dict``);
JSONL files of these records are the artifacts that rounds read and write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from align.errors import AlignError

# Prompt families of the sandbox (DESIGN.md section 3); real prompt sets use "benign" and "harmful".
FAMILIES = ("benign", "borderline", "harmful", "hidden_harmful")
HARMFUL_FAMILIES = ("harmful", "hidden_harmful")  # requests a safe response declines
RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")
SAFETY_BINS = ("safe_vs_unsafe", "both_safe", "both_unsafe")


@dataclass(frozen=True)
class Prompt:
    """A user prompt with the metadata the judges and the gate need.

    ``is_safety`` is the dataset's prompt-level tag (the gate's ``IS_SAFETY(p)``); it is False
    for harmful prompts whose wording hides the intent (family ``hidden_harmful``).
    """

    id: str
    text: str
    family: str
    category: str
    is_safety: bool
    answer: str | None = None
    split: str = "train"
    template: str = ""
    entities: tuple[str, ...] = ()

    @property
    def is_harmful(self) -> bool:
        return self.family in HARMFUL_FAMILIES


@dataclass(frozen=True)
class Demonstration:
    """A prompt and a written answer for supervised fine-tuning (``style`` is the annotator's)."""

    prompt: Prompt
    response: str
    style: str = ""


@dataclass(frozen=True)
class PreferencePair:
    """Two answers to one prompt, ``chosen`` preferred, with the paper's 4-level rating.

    ``axis`` is ``helpfulness`` or ``safety``; ``safety_bin`` is set on safety pairs.
    """

    prompt: Prompt
    chosen: str
    rejected: str
    rating: str
    axis: str
    safety_bin: str | None = None
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None


Record = TypeVar("Record", Prompt, Demonstration, PreferencePair)


def to_dict(record: Prompt | Demonstration | PreferencePair) -> dict[str, Any]:
    return dataclasses.asdict(record)


def prompt_from_dict(d: dict[str, Any]) -> Prompt:
    d = dict(d)
    d["entities"] = tuple(d.get("entities", ()))
    return Prompt(**d)


def from_dict(cls: type[Record], d: dict[str, Any]) -> Record:
    if cls is Prompt:
        return prompt_from_dict(d)  # type: ignore[return-value]
    d = dict(d)
    d["prompt"] = prompt_from_dict(d["prompt"])
    return cls(**d)


def write_jsonl(path: Path, records: Iterable[Any]) -> str:
    """Write records (dataclasses or dicts) one per line; returns the sha256 of the file."""
    h = hashlib.sha256()
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            line = json.dumps(r if isinstance(r, dict) else to_dict(r), sort_keys=True, ensure_ascii=False) + "\n"
            f.write(line)
            h.update(line.encode("utf-8"))
    return h.hexdigest()


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)``; malformed JSON or non-UTF-8 raises AlignError naming the line."""
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise AlignError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise AlignError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
    except UnicodeDecodeError as e:
        raise AlignError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except FileNotFoundError:
        raise AlignError(f"{path}: no such file") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSONL file, in order (errors as ``iter_jsonl``)."""
    return [obj for _, obj in iter_jsonl(path)]


def read_records(path: Path, cls: type[Record]) -> list[Record]:
    out = []
    for lineno, obj in iter_jsonl(path):
        try:
            out.append(from_dict(cls, obj))
        except (TypeError, KeyError) as e:
            raise AlignError(f"{path}:{lineno}: not a {cls.__name__} record ({e})") from None
    return out


def distinct(keys: Sequence[Any]) -> tuple[list[int], list[int]]:
    """``(first, where)``: the index of each distinct key's first occurrence, and for every key the
    position of its key in ``first`` (the K samples of a sharp policy repeat: each is scored once)."""
    seen: dict[Any, int] = {}
    first, where = [], []
    for i, key in enumerate(keys):
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        where.append(seen[key])
    return first, where


def content_hash(records: Iterable[Any]) -> str:
    """sha256 over the canonical JSON of the records: the identity of a dataset."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r if isinstance(r, dict) else to_dict(r), sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


__all__ = [
    "FAMILIES", "HARMFUL_FAMILIES", "RATINGS", "SAFETY_BINS", "Prompt", "Demonstration", "PreferencePair",
    "write_jsonl", "iter_jsonl", "read_records", "content_hash", "distinct", "to_dict", "from_dict",
]
