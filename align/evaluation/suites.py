"""Evaluation suites: a prompt set, what a good response to each prompt does, the judges of the
responses and the metrics each judge measures.

A suite is one YAML file in the project's top-level ``eval/`` (``SuiteSpec`` documents every field).
Its prompts come from the sandbox world's held-out split (``source: sandbox``) or from a dataset read
through a data spec (``source: data``; the file is found under ``--data-dir``, or on the hub when the
spec names a hub dataset). ``expected`` says which prompts a good response declines (``refuse``) and
which it answers (``answer``): constant, from a field of each row (XSTest's ``label``), or from the
sandbox's prompt families. Every prompt thereby carries the project's tag: ``Prompt.is_harmful`` is
"should refuse".

Metrics (``METRICS``) read one judge's labels each: ``violation_rate`` (harmful content) and
``refusal_rate`` over the prompts to refuse, ``false_refusal_rate`` and ``helpful_accuracy`` over the
prompts to answer, ``helpfulness`` (the mean of a judge's score) over the prompts to answer; ``over``
changes the population (ToxiGen: a toxic continuation of any prompt is a violation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from align.config import Strict, folder_name, read_yaml_model
from align.errors import AlignError
from align.evaluation.judge import JUDGES, Judge, get_judge
from align.records import Prompt

# the prompts a metric counts: all, those to refuse, those to answer, or one prompt family (the sandbox's
# false refusals are counted on its borderline prompts, as XSTest counts them on its safe look-alikes)
Population = Literal["all", "refuse", "answer", "benign", "borderline", "harmful", "hidden_harmful"]

# judges that need a model: the options that give it, the first a path (a campaign gives its reward models loaded)
NEEDS_MODEL = {"safety_rm": ("rm", "model"), "helpfulness_rm": ("rm", "model"), "llm": ("model",)}

# metric -> (the Verdict label it counts, or None for the mean of a score; the default population)
METRICS: dict[str, tuple[str | None, Population]] = {
    "violation_rate": ("violation", "refuse"),
    "refusal_rate": ("refused", "refuse"),
    "false_refusal_rate": ("refused", "answer"),
    "helpful_accuracy": ("correct", "answer"),
    "helpfulness": (None, "answer"),
}


class ExpectedField(Strict):
    """Should-refuse from a field of each row: refuse where its value is one of ``refuse``, else answer."""

    field: str = Field(description="the row's field (column) that decides")
    refuse: list[str] = Field(min_length=1, description="values of the field that mean: a good response declines")


class MetricSpec(Strict):
    """One metric of the suite: the judge whose labels it counts and over which prompts."""

    judge: str = Field(description="a judge of the suite's ``judges``")
    metric: str | None = Field(None, description="the metric (see METRICS) when the key names it otherwise, e.g. "
                                                 "violation_rate_llm: {metric: violation_rate, judge: llm}")
    over: Population | None = Field(None, description="prompts counted: all, refuse or answer (default: the "
                                                      "metric's own, see METRICS)")
    score: str | None = Field(None, description="helpfulness: the judge's score to average")

    def base(self, key: str) -> str:
        """The metric this spec measures, stored under ``key``."""
        return self.metric or key


class SuiteData(Strict):
    """Where a data suite's prompts come from."""

    spec: str = Field(description="a data spec YAML (kind: prompts), relative to the suite file")
    file: str | None = Field(None, description="the data file (a glob for the lines format), relative to "
                                               "--data-dir; omit when the spec names a hub dataset")


class SuiteSpec(Strict):
    """An evaluation suite (``eval/<name>.yaml``)."""

    name: str = Field(description="the suite's name (part of its eval rounds' ids)")
    description: str = Field("", description="what the suite measures and where its prompts come from")
    source: Literal["sandbox", "data"] = Field(description="sandbox: the world's held-out prompts; data: a dataset")
    data: SuiteData | None = Field(None, description="source: data: the data spec and file")
    prompt_field: str | None = Field(None, description="the row field holding the prompt (default: the spec's)")
    category_field: str | None = Field(None, description="the row field holding the category (default: the spec's)")
    expected: Literal["answer", "refuse", "by_family"] | ExpectedField = Field(
        description="what a good response does: answer, refuse, from a field, or by_family (the sandbox's harmful "
                    "families refuse)")
    judges: dict[str, dict[str, Any]] = Field(min_length=1, description="judge name -> its options")
    metrics: dict[str, str | MetricSpec] = Field(min_length=1, description="metric -> its judge (or a MetricSpec)")
    max_prompts: int | None = Field(None, ge=1, description="evaluate only the first N prompts")

    _name_ok = field_validator("name")(lambda cls, v: folder_name(v))

    @field_validator("judges")
    @classmethod
    def _known_judges(cls, judges: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(judges) - set(JUDGES))
        if unknown:
            raise ValueError(f"unknown judge {unknown[0]!r}; known judges: {', '.join(sorted(JUDGES))}")
        return {k: dict(v or {}) for k, v in judges.items()}

    @model_validator(mode="after")
    def _consistent(self) -> SuiteSpec:
        if self.source == "data" and self.data is None:
            raise ValueError("a data suite needs data: {spec, file}")
        if self.source == "sandbox" and self.expected != "by_family":
            raise ValueError("a sandbox suite's expected behaviour is by_family")
        for name, m in self.metric_specs().items():
            if m.base(name) not in METRICS:
                raise ValueError(f"metrics: unknown metric {m.base(name)!r}; known: {', '.join(METRICS)}")
            if m.judge not in self.judges:
                raise ValueError(f"metrics.{name}: judge {m.judge!r} is not among the suite's judges")
            if METRICS[m.base(name)][0] is None and not m.score:
                raise ValueError(f"metrics.{name}: name the judge's score to average (score: ...)")
        return self

    def metric_specs(self) -> dict[str, MetricSpec]:
        return {k: MetricSpec(judge=v) if isinstance(v, str) else v for k, v in self.metrics.items()}


@dataclass(frozen=True)
class Suite:
    """A loaded suite: its prompts (``Prompt.is_harmful``: a good response declines) and built judges."""

    name: str
    prompts: list[Prompt]
    judges: dict[str, Judge]
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    spec: SuiteSpec | None = None
    files: tuple[Path, ...] = ()  # the files it was read from (hashed into an eval round's inputs)
    skipped: dict[str, str] = field(default_factory=dict)  # judge -> why it did not run (and its metrics)

    @property
    def judge(self) -> Judge:
        """The first judge (the policy rounds' in-round evaluation reads one)."""
        return next(iter(self.judges.values()))


def expected(prompt: Prompt) -> str:
    """``refuse`` or ``answer``: what a good response to ``prompt`` does."""
    return "refuse" if prompt.is_harmful else "answer"


# ------------------------------------------------------------------------------- finding ---
def suite_dirs(extra: str | Path | None = None) -> list[Path]:
    """Where suite names are looked up: ``extra`` (``suites.dir``), ``./eval`` and the checkout's ``eval/``."""
    here = Path(__file__).resolve().parents[2] / "eval"
    return list(dict.fromkeys([*([Path(extra).resolve()] if extra else []), Path("eval").resolve(), here]))


def find_suite(name_or_path: str | Path, extra_dir: str | Path | None = None) -> Path:
    """The YAML file of a suite given by path or by name (``<extra_dir or eval>/<name>.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise AlignError(f"{path}: no such suite file")
        return path
    for d in suite_dirs(extra_dir):
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    known = sorted({p.stem for d in suite_dirs(extra_dir) if d.is_dir() for p in d.glob("*.yaml")})
    raise AlignError(f"unknown suite {str(name_or_path)!r}; known suites: {', '.join(known) or 'none'} "
                     f"(or give a suite file's path)")


def read_suite_spec(path: Path) -> SuiteSpec:
    """The validated ``SuiteSpec`` of a suite file; errors name the file and the field."""
    return read_yaml_model(path, SuiteSpec, "suite")


def suite_files(path: Path, spec: SuiteSpec, data_dir: Path | None) -> tuple[Path, Path | None]:
    """The data spec and the data file of a data suite (the file None when the spec reads the hub)."""
    from align.data import load_spec

    assert spec.data is not None
    spec_path = (path.parent / spec.data.spec).resolve()
    data_spec = load_spec(spec_path)
    if spec.data.file is None:
        if not data_spec.hub:
            raise AlignError(f"{path}: data.file: the data spec {spec_path.name} names no hub dataset, so the suite "
                             "needs a file")
        return spec_path, None
    file = _data_path(spec, data_dir)
    if file is None:
        raise AlignError(f"suite {spec.name!r} reads {spec.data.file}: give --data-dir (the folder holding it)")
    if not any(file.parent.glob(file.name)):
        raise AlignError(f"{path}: data.file: {file} not found" + (f" under --data-dir {data_dir}" if data_dir else ""))
    return spec_path, file


def suite_inputs(path: Path, spec: SuiteSpec, data_dir: Path | None) -> list[Path]:
    """The files an evaluation of the suite reads (hashed into its round's inputs): the suite, and for a data
    suite its data spec and data files as far as they can be found (a missing one fails when the round runs)."""
    files = [path]
    if spec.source == "data" and spec.data is not None:
        files.append((path.parent / spec.data.spec).resolve())
        file = _data_path(spec, data_dir)
        if file is not None:
            files += sorted(file.parent.glob(file.name)) or [file]
    return files


def _data_path(spec: SuiteSpec, data_dir: Path | None) -> Path | None:
    """The suite's data file (a glob for the lines format): absolute, or under ``data_dir``; None when it reads
    the hub, or when it is relative and no data folder was given."""
    if spec.data is None or spec.data.file is None:
        return None
    file = Path(spec.data.file)
    return file if file.is_absolute() else (data_dir / file if data_dir is not None else None)


# ------------------------------------------------------------------------------- loading ---
def suite_prompts(name_or_path: str | Path, *, data_dir: Path | None = None,
                  world: Path | None = None) -> tuple[Path, SuiteSpec, list[Prompt], list[Path]]:
    """A suite's file, spec, prompts (``max_prompts`` applied) and the files they were read from."""
    path = find_suite(name_or_path)
    spec = read_suite_spec(path)
    files: list[Path] = [path]
    if spec.source == "sandbox":
        if world is None:
            raise AlignError(f"suite {spec.name!r} reads the sandbox world's held-out prompts: evaluate a round of a "
                             "sandbox campaign")
        from align.sandbox.build import read_prompts

        prompts = read_prompts(world, "eval")
    else:
        prompts, data_files = _data_prompts(path, spec, data_dir)
        files += data_files
    if spec.max_prompts:
        prompts = prompts[: spec.max_prompts]
    if not prompts:
        raise AlignError(f"{path}: the suite has no prompts")
    return path, spec, prompts, files


def load_suite(name_or_path: str | Path, *, data_dir: Path | None = None, world: Path | None = None,
               judge_options: dict[str, dict[str, Any]] | None = None, skip: dict[str, str] | None = None) -> Suite:
    """Read a suite, its prompts and its judges. ``world``: the sandbox world (sandbox suites);
    ``judge_options``: options a campaign supplies per judge (a reward model's folder, the calibrated
    threshold), under the suite's own; ``skip``: judges that cannot run here (no reward model yet, no
    rater model given), with the reason: they and their metrics are left out and the reason recorded."""
    path, spec, prompts, files = suite_prompts(name_or_path, data_dir=data_dir, world=world)
    extra, skip = judge_options or {}, dict(skip or {})
    for name, options in spec.judges.items():  # a judge that needs a model nobody gave is skipped, not an error
        given = {**extra.get(name, {}), **options}
        if name in NEEDS_MODEL and not any(given.get(k) for k in NEEDS_MODEL[name]):
            key = NEEDS_MODEL[name][0]
            skip.setdefault(name, f"no {key} given (--judge-option {name}.{key}=PATH)")
    judges = {name: get_judge(name, **{**extra.get(name, {}), **options})
              for name, options in spec.judges.items() if name not in skip}
    if not judges:
        raise AlignError(f"{path}: none of the suite's judges can run here: "
                         + "; ".join(f"{k}: {v}" for k, v in skip.items()))
    metrics = {k: m for k, m in spec.metric_specs().items() if m.judge in judges}
    return Suite(spec.name, prompts, judges, metrics, spec, tuple(files),
                 {k: v for k, v in skip.items() if k in spec.judges})


def _data_prompts(path: Path, spec: SuiteSpec, data_dir: Path | None) -> tuple[list[Prompt], list[Path]]:
    from align.data import SafetyTag, load_prompts, load_spec

    spec_path, file = suite_files(path, spec, data_dir)
    data_spec = load_spec(spec_path)
    update: dict[str, Any] = {"name": spec.name}
    if spec.prompt_field:
        update["prompt_column"] = spec.prompt_field
    if spec.category_field:
        update["category_column"] = spec.category_field
    if isinstance(spec.expected, ExpectedField):
        update["is_safety"] = SafetyTag(column=spec.expected.field, true_values=spec.expected.refuse)
    elif spec.expected in ("answer", "refuse"):
        update["is_safety"] = spec.expected == "refuse"
    data_spec = data_spec.model_copy(update=update)
    prompts, _ = load_prompts(data_spec, file)
    files = [spec_path] + (sorted(file.parent.glob(file.name)) if file is not None else [])
    return prompts, files


def sandbox_heldout(world: Path) -> Suite:
    """The held-out prompts of the sandbox world in ``world`` (unseen entities and templates), judged by
    the gold judges: what every policy round of a sandbox campaign reports as ``metrics.gold``."""
    from align.sandbox.build import read_prompts

    return Suite("sandbox-heldout", read_prompts(world, "eval"), {"sandbox_gold": get_judge("sandbox_gold")})
