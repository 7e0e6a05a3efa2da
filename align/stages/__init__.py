"""Stage kinds: one module per kind in this package, each declaring itself with ``register(Stage(...))``.

A ``Stage`` holds in one place everything a campaign needs to know of its kind:

- ``sections``: its config sections (top-level YAML keys, with their pydantic models);
- ``parents``: the earlier rounds it builds on, picked from the rounds planned so far (``Planned``);
- ``inputs``: files outside the campaign that it reads (their hashes join the round's inputs);
- ``check``: what it can check of those before any round is built (``align.preflight``): one line
  per problem, ``FILE: KEY: what is wrong (what to do)``;
- ``run``: the stage itself, ``run(ctx) -> metrics``. The config slice hashed into its round is what
  ``run`` reads through ``ctx.cfg`` (``align.config_reads``), never a list written by hand;
- ``names``: the round names it accepts (None: any); ``policy``: its round holds a policy that later
  stages build on; ``uses_rule``: its result depends on the reward combination rule (``align ablate``).

Adding a stage kind is adding a module here: modules are discovered on first use. Code outside the
package (a test, a user's project) calls ``register`` before the config is loaded.

``plan_rounds`` chains the declared stages into rounds through their parent rules. The registry
imports no config code: the config composes its model from the sections registered here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from align.errors import AlignError
from align.store import Parents, Round, checkpoint_dir, newest, round_id, tracking_dir

CampaignConfig = Any  # align.config.CampaignConfig: the registry imports no config code (the config imports it)
StageSpec = Any  # align.config.StageSpec


class PlanError(AlignError):
    """A stage cannot find the earlier rounds it builds on (``index``: its place in ``stages``)."""

    def __init__(self, message: str, index: int = -1):
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class PlannedRound:
    id: str
    kind: str
    name: str | None
    policy: bool


class Planned:
    """The rounds planned before the current one: what a stage's ``parents`` rule picks from."""

    def __init__(self, rounds: Sequence[PlannedRound] = ()):
        self.rounds = list(rounds)

    def find(self, kind: str, name: str | None = None) -> str | None:
        """The newest planned round of ``kind`` (and ``name``), or None."""
        found = newest(self.rounds, kind, name)
        return found.id if found else None

    def latest(self, kind: str, name: str | None = None) -> str:
        """The newest planned round of ``kind`` (and ``name``); a PlanError when there is none."""
        found = self.find(kind, name)
        if found is None:
            raise PlanError(f"needs an earlier {kind} stage" + (f" named {name}" if name else ""))
        return found

    def all(self, kind: str) -> list[str]:
        """Every planned round of ``kind``, oldest first."""
        return [r.id for r in self.rounds if r.kind == kind]

    def policy(self) -> str:
        """The newest planned round that holds a policy (sft, rs, ppo)."""
        found = [r.id for r in self.rounds if r.policy]
        if not found:
            raise PlanError("needs an earlier stage that trains a policy (sft)")
        return found[-1]


@dataclass(frozen=True)
class StageContext:
    """What a running stage gets: the config (reads recorded), its spec, parents and output round."""

    cfg: CampaignConfig  # a ConfigReads view: what the stage reads is what its round's hash covers
    spec: StageSpec
    parents: Parents
    out: Round  # the round being built (a temporary folder until it is committed)
    seed: int
    run_dir: Path
    log: Callable[[str], None] = print
    inputs: Mapping[str, str] = field(default_factory=dict)  # the round's input hashes (parents' outputs, files)

    @property
    def round_id(self) -> str:
        return self.out.id

    @property
    def checkpoint_dir(self) -> Path:
        """Where a long stage keeps checkpoints to resume from (outside the round; removed once it commits)."""
        return checkpoint_dir(self.run_dir, self.out.id)

    @property
    def tracking_dir(self) -> Path:
        return tracking_dir(self.run_dir, self.out.id)


def _no_inputs(cfg: CampaignConfig, spec: StageSpec) -> list[Path]:
    return []


def _no_checks(cfg: CampaignConfig, spec: StageSpec) -> list[str]:
    return []


@dataclass(frozen=True)
class Stage:
    """One stage kind: its config sections, parent rule, inputs and run function."""

    kind: str
    run: Callable[[StageContext], dict[str, Any]]
    parents: Callable[[Planned, CampaignConfig, StageSpec], Sequence[str]]
    sections: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    inputs: Callable[[CampaignConfig, StageSpec], Sequence[Path]] = _no_inputs
    check: Callable[[CampaignConfig, StageSpec], list[str]] = _no_checks
    names: tuple[str, ...] | None = None
    policy: bool = False
    uses_rule: bool = False
    doc: str = ""


_REGISTRY: dict[str, Stage] = {}
_DISCOVERED = False


def register(stage: Stage, *, replace: bool = False) -> Stage:
    """Add a stage kind (its config sections join the campaign config); ``replace`` swaps a registered one."""
    if stage.kind in _REGISTRY and not replace and _REGISTRY[stage.kind] is not stage:
        raise ValueError(f"stage kind {stage.kind!r} is already registered")
    _REGISTRY[stage.kind] = stage
    return stage


def _discover() -> None:
    """Import every stage module of this package once (each registers its kind)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        importlib.import_module(f"{__name__}.{module}")


def stage_kinds() -> tuple[str, ...]:
    """Every registered stage kind."""
    _discover()
    return tuple(_REGISTRY)


def get_stage(kind: str) -> Stage:
    _discover()
    if kind not in _REGISTRY:
        raise AlignError(f"unknown stage kind {kind!r}; known kinds: {', '.join(_REGISTRY)}")
    return _REGISTRY[kind]


def stage_sections() -> dict[str, type[BaseModel]]:
    """The config sections the registered stages declare, by name."""
    _discover()
    sections: dict[str, type[BaseModel]] = {}
    for stage in _REGISTRY.values():
        for name, model in stage.sections.items():
            if sections.setdefault(name, model) is not model:
                raise ValueError(f"config section {name!r} is declared by two stages with different models")
    return sections


# --------------------------------------------------------------------------------- planning ---
@dataclass(frozen=True)
class RoundPlan:
    """A round to have: its stage, its parents and the files outside the campaign it reads."""

    id: str
    kind: str
    name: str | None
    seed: int
    spec: StageSpec
    parents: tuple[PlannedRound, ...]
    inputs: tuple[Path, ...] = ()


def plan_rounds(cfg: CampaignConfig) -> list[RoundPlan]:
    """The rounds of the campaign, in order (one per declared stage); a PlanError names the first stage
    that cannot find the rounds it builds on."""
    planned = Planned()
    by_id: dict[str, PlannedRound] = {}
    plans = []
    for i, spec in enumerate(cfg.stages):
        stage = get_stage(spec.kind)
        try:
            parent_ids = list(dict.fromkeys(stage.parents(planned, cfg, spec)))
        except PlanError as e:
            raise PlanError(f"stages[{i}] ({spec.kind}{' ' + spec.name if spec.name else ''}): {e}", index=i) from None
        this = PlannedRound(round_id(i, spec.kind, spec.name), spec.kind, spec.name, stage.policy)
        inputs = tuple(stage.inputs(cfg, spec)) + (_rule_files(cfg) if stage.uses_rule else ())
        plans.append(RoundPlan(this.id, spec.kind, spec.name, cfg.seed if spec.seed is None else spec.seed, spec,
                               tuple(by_id[p] for p in parent_ids), inputs))
        planned.rounds.append(this)
        by_id[this.id] = this
    return plans


def _rule_files(cfg: CampaignConfig) -> tuple[Path, ...]:
    """A user rule given as a file (``/path/rules.py:function``, as one beside the config is recorded): its
    source is an input of the rounds whose result depends on the rule, so editing it rebuilds them."""
    module = cfg.combine.rule.rpartition(":")[0]
    return (Path(module),) if module.endswith(".py") else ()


def policy_kinds() -> frozenset[str]:
    """The kinds whose rounds hold a policy."""
    return frozenset(k for k in stage_kinds() if _REGISTRY[k].policy)


__all__ = ["PlanError", "Planned", "PlannedRound", "RoundPlan", "Stage", "StageContext", "get_stage", "plan_rounds",
           "policy_kinds", "register", "stage_kinds", "stage_sections"]
