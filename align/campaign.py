"""Planning and running a campaign as versioned rounds (DESIGN.md section 4).

``plan_rounds`` (``align.stages``) turns the config's ordered stages into rounds ``<NN>-<kind>[-<name>]``,
each with the parents its stage's rule picks and the files it reads. ``run_campaign`` walks the plan
make-style: a completed round is reused when its inputs (its parents' output digests and its
files' hashes) are the same and the config fields its stage read when it was built still hold the
same values (``align.config_reads``); any other round is built, after its parents verify, atomically
through the ``CampaignStore``. ``campaign_status`` reads it all back.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align import distributed
from align.config import CampaignConfig, config_to_yaml, load_config
from align.config_reads import ConfigReads, current_slice
from align.errors import AlignError, Interrupted
from align.preflight import first, preflight
from align.progress import quiet
from align.stages import PlanError, RoundPlan, StageContext, get_stage, plan_rounds, policy_kinds
from align.store import (CampaignStore, Parents, Round, RoundRecord, code_version, crash_point, digest, file_stat,
                         library_versions, sha256_file, write_atomic)

Log = Callable[[str], None]

__all__ = ["PlanError", "RoundPlan", "RoundResult", "campaign_status", "dry_run", "evaluate_round", "load_run",
           "plan_rounds", "round_diff", "run_campaign", "verify_run"]


def _stderr(message: str) -> None:
    if not quiet():
        print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RoundResult:
    """A round after a run: where it is, what it measured, and whether it was reused."""

    id: str
    path: Path
    metrics: dict[str, Any]
    reused: bool


def _input_hashes(plan: RoundPlan, done: dict[str, RoundRecord], known: RoundRecord | None = None) -> dict[str, str]:
    """The round's inputs: its parents' output digests and its files' sha256. A file whose size and
    mtime are those ``known`` (the round's existing manifest) recorded keeps its recorded hash."""
    hashes = {f"round:{p.id}": done[p.id].manifest["outputs_digest"] for p in plan.parents}
    recorded = known.manifest if known else {}
    for f in plan.inputs:
        if not f.is_file():
            raise AlignError(f"{f}: data file of round {plan.id} not found (restore it, or change the config that "
                             "names it)")
        key = f"file:{f}"
        same = recorded.get("input_stats", {}).get(key) == file_stat(f) and key in recorded.get("input_hashes", {})
        hashes[key] = recorded["input_hashes"][key] if same else sha256_file(f)
    return hashes


def _input_stats(plan: RoundPlan) -> dict[str, list[int]]:
    return {f"file:{f}": file_stat(f) for f in plan.inputs}


def _config_now(record: RoundRecord, plan: RoundPlan, cfg: CampaignConfig) -> dict[str, Any] | None:
    """The fields the round's stage read when it was built, with their values in ``cfg`` (None when
    one no longer exists)."""
    recorded = record.manifest.get("config", {})
    values = current_slice(cfg, [p for p in recorded if p != "seed"])
    return None if values is None else {"seed": plan.seed, **values}


def _unchanged(record: RoundRecord, plan: RoundPlan, cfg: CampaignConfig, inputs: dict[str, str]) -> bool:
    now = _config_now(record, plan, cfg)
    return (now is not None and digest(now) == record.manifest.get("config_hash")
            and record.manifest.get("input_hashes") == inputs)


def _select(plans: list[RoundPlan], until: str | None) -> list[RoundPlan]:
    if until is None:
        return plans
    for i, p in enumerate(plans):
        if until in (p.id, p.kind):
            return plans[: i + 1]
    raise AlignError(f"--until {until!r}: no such stage or round; planned: {', '.join(p.id for p in plans)}")


def _parents(plan: RoundPlan, done: dict[str, RoundRecord]) -> Parents:
    return Parents(tuple(Round(p.id, p.kind, p.name, done[p.id].path) for p in plan.parents), policy_kinds())


def _build(plan: RoundPlan, cfg: CampaignConfig, store: CampaignStore, done: dict[str, RoundRecord],
           inputs: dict[str, str], log: Log) -> RoundRecord:
    """Run the round's stage in a temporary folder and commit it with its manifest.

    Under a multi-process launch every process runs the stage; the main process commits, the others
    build in a scratch folder that is thrown away and, once every process has finished the stage and the
    main process has committed, read the committed round."""
    started = time.time()
    main = distributed.is_main()
    folder = store.build(plan.id) if main else _scratch(plan.id)
    with folder as tmp:
        view = ConfigReads(cfg)
        ctx = StageContext(cfg=view, spec=plan.spec, parents=_parents(plan, done),  # type: ignore[arg-type]
                           out=Round(plan.id, plan.kind, plan.name, tmp), seed=plan.seed, run_dir=store.run_dir,
                           log=log, inputs=inputs)
        metrics = get_stage(plan.kind).run(ctx)
        crash_point("stage-ran", plan.id)
        distributed.barrier()  # every process finished the stage: only then is the round committed
        if not main:
            distributed.barrier()  # the main process has committed the round
            record = store.read(plan.id)
            if record is None:
                raise AlignError(f"round {plan.id}: the main process did not commit it")
            return record
        config = {"seed": plan.seed, **view.reads()}
        ended = time.time()
        manifest = {"id": plan.id, "kind": plan.kind, "name": plan.name, "parents": [p.id for p in plan.parents],
                    "config": config, "config_hash": digest(config), "input_hashes": inputs,
                    "input_stats": _input_stats(plan), "seed": plan.seed,
                    "campaign": cfg.campaign, "code_version": code_version(), "library_versions": library_versions(),
                    "started": started, "ended": ended, "duration_s": round(ended - started, 3), "metrics": metrics}
        record = store.commit(plan.id, tmp, manifest)
        shutil.rmtree(ctx.checkpoint_dir, ignore_errors=True)  # the round is complete: nothing to resume
    distributed.barrier()
    return record


@contextmanager
def _scratch(round_id: str) -> Iterator[Path]:
    """A folder outside the run directory for a process other than the main one to build in, removed after."""
    with tempfile.TemporaryDirectory(prefix=f"align-{round_id}-rank{distributed.world()[0]}-") as tmp:
        yield Path(tmp)


def run_campaign(cfg: CampaignConfig, run_dir: Path, *, until: str | None = None, log: Log = _stderr,
                 keep_config: bool = False) -> list[RoundResult]:
    """Run or resume the campaign in ``run_dir``; returns the rounds of the plan, in order. The run's
    ``campaign.yaml`` becomes ``cfg`` (``keep_config``: unless the run already has one).

    Before anything is written: every manifest reads, and the pre-flight checks of the rounds to build
    pass (``align.preflight``). A reused round passes the store's fast integrity check first; a round is
    built only on parents that verify. Ctrl-C stops with ``Interrupted`` naming the round."""
    from align import vllm_backend

    store = CampaignStore(run_dir)
    plans = _select(plan_rounds(cfg), until)
    reusable = _reusable(cfg, store, plans)
    first(preflight(cfg, [p for p in plans if p.id not in reusable], run_dir))
    vllm_backend.activate(getattr(cfg, "generation", None))  # the sampling engine (generation.backend)
    results: list[RoundResult] = []
    done: dict[str, RoundRecord] = {}
    config_written = False

    def write_config() -> None:
        """The run's campaign.yaml becomes ``cfg``: once a round is about to be built with it, or the run
        ends well, never when it fails before changing anything (status would mark unbuilt rounds stale)."""
        nonlocal config_written
        if distributed.is_main() and not config_written and not (keep_config and (run_dir / "campaign.yaml").is_file()):
            write_atomic(run_dir / "campaign.yaml", config_to_yaml(cfg))
        config_written = True

    with store.lock() if distributed.is_main() else nullcontext():  # the main process writes, the others follow
        for plan in plans:  # every round to reuse is intact, before the run says or does anything
            if plan.id in reusable:
                store.require_intact(plan.id, why="reused")
        for plan in plans:
            existing = store.read(plan.id)
            inputs = _input_hashes(plan, done, existing)
            if existing and _unchanged(existing, plan, cfg, inputs):
                if plan.id not in reusable:  # its parent was rebuilt into the same outputs: checked here
                    store.require_intact(plan.id, why="reused")
                log(f"[{plan.id}] completed earlier: reused")
                done[plan.id] = existing
                results.append(RoundResult(plan.id, existing.path, existing.metrics, reused=True))
                continue
            for parent in plan.parents:
                store.require_intact(parent.id, why=f"a parent of {plan.id}", fast=False)
            log(f"[{plan.id}] running {plan.kind}" + (" (inputs or config changed)" if existing else ""))
            write_config()
            try:
                done[plan.id] = record = _build(plan, cfg, store, done, inputs, log)
            except KeyboardInterrupt:
                raise Interrupted(f"stopped in round {plan.id} ({plan.kind}); its unfinished files are dropped "
                                  f"(checkpoints kept, if it writes any): align run resumes from there") from None
            log(f"[{plan.id}] done in {record.manifest['duration_s']:.1f}s")
            results.append(RoundResult(plan.id, record.path, record.metrics, reused=False))
        write_config()
    return results


def _reusable(cfg: CampaignConfig, store: CampaignStore, plans: list[RoundPlan]) -> set[str]:
    """The rounds of ``plans`` that ``run_campaign`` would reuse (every manifest read: a corrupted one is an
    error before anything is written)."""
    done: dict[str, RoundRecord] = {}
    reusable: set[str] = set()
    for plan in plans:
        record = store.read(plan.id)
        if record is None:
            continue
        done[plan.id] = record
        try:
            if all(p.id in reusable for p in plan.parents) and _unchanged(record, plan, cfg,
                                                                          _input_hashes(plan, done, record)):
                reusable.add(plan.id)
        except AlignError:  # an input file is gone: the round is rebuilt (and its stage's check names the file)
            pass
    return reusable


def dry_run(cfg: CampaignConfig, run_dir: Path, *, until: str | None = None, sharding: Any = None) -> dict[str, Any]:
    """What ``align run`` would do, without writing anything or loading a weight: ``{"rounds": [{id, kind,
    action, memory}], "problems": [...]}``, each round's action ``reuse`` or ``build`` (``rebuild`` when a stale
    one exists) and, for a round to build, its estimated memory per process under ``sharding``
    (``align.memory``; None: one process)."""
    from align.memory import Sharding, stage_estimate

    store = CampaignStore(run_dir)
    plans = _select(plan_rounds(cfg), until)
    reusable = _reusable(cfg, store, plans)
    to_build = [p for p in plans if p.id not in reusable]
    problems = preflight(cfg, to_build, run_dir)
    sharding = sharding or Sharding()
    architectures: dict[str, Any] = {}
    rounds = []
    for p in plans:
        action = "reuse" if p.id in reusable else "rebuild" if store.read(p.id) else "build"
        memory = None
        if action != "reuse":
            try:
                estimate = stage_estimate(cfg, p.kind, p.name, sharding, architectures)
            except AlignError as e:
                if str(e) not in problems:
                    problems.append(str(e))
                estimate = None
            if estimate is not None:
                memory = {"bytes": round(estimate[0].total), "line": estimate[0].line(), "assumes": estimate[1]}
        rounds.append({"id": p.id, "kind": p.kind, "parents": [q.id for q in p.parents], "action": action,
                       "memory": memory})
    return {"campaign": cfg.campaign, "run_dir": str(run_dir), "sharding": sharding.describe(), "rounds": rounds,
            "problems": problems}


# ---------------------------------------------------------------------------------- reading ---
def load_run(run_dir: Path) -> tuple[CampaignConfig, CampaignStore]:
    """The resolved config and store of an existing run directory."""
    if not run_dir.is_dir():
        raise AlignError(f"{run_dir}: no such run directory")
    if not (run_dir / "campaign.yaml").is_file():
        raise AlignError(f"{run_dir}: not a run directory (no campaign.yaml)")
    return load_config(run_dir / "campaign.yaml"), CampaignStore(run_dir)


def campaign_status(run_dir: Path, cfg: CampaignConfig | None = None) -> dict[str, Any]:
    """``{"campaign", "rounds": [{id, kind, status, parents, config_hash, metrics, duration_s}]}`` in
    campaign order, for the run's own config or for ``cfg`` (what ``align run`` of it would do); status
    is ``completed`` (would be reused), ``stale`` (a config field its stage read, an input or a parent
    changed: it would be rebuilt) or ``pending``."""
    run_cfg, store = load_run(run_dir)
    cfg = cfg or run_cfg
    plans = plan_rounds(cfg)
    fresh = _reusable(cfg, store, plans)
    rounds = []
    for plan in plans:
        record = store.read(plan.id)
        m = record.manifest if record is not None else {}
        rounds.append({"id": plan.id, "kind": plan.kind, "parents": [p.id for p in plan.parents],
                       "status": "completed" if plan.id in fresh else "stale" if record is not None else "pending",
                       "config_hash": m.get("config_hash"), "metrics": m.get("metrics", {}),
                       "duration_s": m.get("duration_s")})
    planned = {r["id"] for r in rounds}
    for rid in store.round_ids():  # eval rounds made outside the stages (align eval), after the campaign's own
        record = store.read(rid)
        if rid not in planned and record is not None and record.manifest.get("kind") == "eval":
            m = record.manifest
            rounds.append({"id": rid, "kind": "eval", "status": "completed", "parents": m.get("parents", []),
                           "config_hash": m.get("config_hash"), "metrics": record.metrics,
                           "duration_s": m.get("duration_s")})
    return {"campaign": cfg.campaign, "rounds": rounds}


def verify_run(run_dir: Path) -> dict[str, list[str]]:
    """Rehash every completed round's outputs: round id -> problems (empty when it verifies)."""
    _, store = load_run(run_dir)
    return {rid: store.verify(rid) for rid in store.round_ids()}


def round_diff(run_dir: Path, a: str, b: str) -> dict[str, dict[str, tuple[Any, Any]]]:
    """What differs between rounds ``a`` and ``b``: the round (kind, name, parents, seed), the config
    fields their stages read, and their metrics."""
    _, store = load_run(run_dir)
    records = []
    for rid in (a, b):
        record = store.read(rid)
        if record is None:
            raise AlignError(f"{run_dir}: no completed round {rid!r}; rounds: {', '.join(store.round_ids())}")
        records.append(record)
    out = {}
    rounds = [{k: r.manifest.get(k) for k in ("kind", "name", "parents", "seed")} for r in records]
    for section in ("round", "config", "metrics"):
        fa, fb = (_flatten(rounds[i] if section == "round" else records[i].manifest.get(section, {})) for i in (0, 1))
        out[section] = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


# ------------------------------------------------------------------------- evaluation rounds ---
def evaluate_round(run_dir: Path, suite: str, *, policy: str | None = None, model: Path | None = None,
                   cfg: CampaignConfig | None = None, log: Log = _stderr) -> RoundResult:
    """Evaluate a policy round of ``run_dir`` (default: its newest), or the checkpoint at ``model``, on
    ``suite`` into the eval round ``eval-<suite>-<source>`` of the run, through the store: reused when
    nothing it reads changed, built atomically otherwise. ``cfg``: the run's config with the caller's
    overrides (default: the run's own, or the defaults for a folder that is not a campaign's)."""
    from align.config import StageSpec, parse_config
    from align.evaluation.suites import suite_files
    from align.stages import PlannedRound
    from align.stages.eval import RM_JUDGES, stage_suite
    from align.store import eval_round_id

    store = CampaignStore(run_dir)
    if cfg is None:
        cfg = load_run(run_dir)[0] if (run_dir / "campaign.yaml").is_file() else parse_config({"campaign": "eval"})
    completed = [r for r in map(store.read, store.round_ids()) if r is not None and r.manifest.get("kind") != "eval"]
    kinds = policy_kinds()
    if model is None:
        policies = [r for r in completed if r.manifest.get("kind") in kinds]
        if policy is None:
            if not policies:
                raise AlignError(f"{run_dir}: no completed policy round to evaluate (give --round or --model)")
            chosen = policies[-1]
        else:
            chosen = store.read(policy)
            if chosen is None:
                raise AlignError(f"--round {policy}: no completed round of that id in {run_dir}; rounds: "
                                 f"{', '.join(store.round_ids()) or 'none'}")
            if chosen.manifest.get("kind") not in kinds:
                raise AlignError(f"--round {policy}: a {chosen.manifest.get('kind')} round holds no policy to evaluate "
                                 f"(policy rounds: {', '.join(r.id for r in policies) or 'none'})")
        source, extra_inputs = chosen.id, ()
    else:
        from align.preflight import model_problems

        if not model.is_dir():
            raise AlignError(f"--model {model}: no such checkpoint folder")
        first(model_problems(model, "--model", trust_remote_code=cfg.model.trust_remote_code))
        weights = tuple(sorted(model.glob("*.safetensors")))
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": str(model)})})
        source, extra_inputs, chosen = "model-" + digest({w.name: sha256_file(w) for w in weights})[:10], weights, None
    spec = StageSpec(kind="eval", name=suite)
    path, suite_spec = stage_suite(cfg, spec)
    if suite_spec.source == "data":  # its data files are found before anything is written
        suite_files(path, suite_spec, Path(cfg.suites.data_dir) if cfg.suites.data_dir else None)
    parents = [r for r in [store.latest("sandbox")] if r is not None] + ([chosen] if chosen else [])
    parents += [r for judge, axis in RM_JUDGES.items() if judge in suite_spec.judges
                and (r := store.latest("rm", axis)) is not None]
    if suite_spec.source == "sandbox" and not any(r.manifest.get("kind") == "sandbox" for r in parents):
        raise AlignError(f"suite {suite}: reads the sandbox world's held-out prompts, and {run_dir} has no sandbox "
                         "round")
    rid = eval_round_id(suite_spec.name, source)
    planned = tuple(PlannedRound(r.id, r.manifest["kind"], r.manifest.get("name"), r.manifest["kind"] in kinds)
                    for r in parents)
    stage = get_stage("eval")
    plan = RoundPlan(rid, "eval", suite_spec.name, cfg.seed, spec, planned,
                     tuple(stage.inputs(cfg, spec)) + extra_inputs)
    done = {r.id: r for r in parents}
    with store.lock():
        existing = store.read(rid)
        inputs = _input_hashes(plan, done, existing)
        if existing and _unchanged(existing, plan, cfg, inputs):
            for r in (*parents, existing):  # what the result stands on, and the result itself
                store.require_intact(r.id, why="reused" if r is existing else f"read by {rid}")
            log(f"[{rid}] completed earlier: reused")
            return RoundResult(rid, existing.path, existing.metrics, reused=True)
        for parent in parents:
            store.require_intact(parent.id, why=f"read by {rid}", fast=False)
        log(f"[{rid}] running eval of {source} on {suite_spec.name}")
        try:
            record = _build(plan, cfg, store, done, inputs, log)
        except KeyboardInterrupt:
            raise Interrupted(f"stopped in round {rid}; nothing of it was kept but the answers generated so far: "
                              "align eval resumes from there") from None
        log(f"[{rid}] done in {record.manifest['duration_s']:.1f}s")
        return RoundResult(rid, record.path, record.metrics, reused=False)
