"""Planning and running a campaign as versioned rounds (DESIGN.md section 4).

``plan_rounds`` turns the config's ordered stages into rounds ``<NN>-<kind>[-<name>]`` with
their parents and the slice of the config each depends on. ``run_campaign`` walks the plan
make-style: a round whose config hash and input hashes (parents' output digests, data files)
match a completed round is reused; any other is built, after its parents verify, atomically
through the ``CampaignStore``. ``campaign_status`` reads it all back.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.config import CampaignConfig, config_to_yaml, load_config
from align.errors import AlignError
from align.store import CampaignStore, RoundRecord, code_version, digest, library_versions, sha256_file, write_atomic

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RoundPlan:
    """A round to have: its id, kind, parents and the config it depends on."""

    id: str
    kind: str
    parents: tuple[str, ...]
    config: dict[str, Any]
    data_files: tuple[Path, ...] = ()

    @property
    def config_hash(self) -> str:
        return digest(self.config)


@dataclass(frozen=True)
class RoundResult:
    """A round after a run: where it is, what it measured, and whether it was reused."""

    id: str
    path: Path
    metrics: dict[str, Any]
    reused: bool


def plan_rounds(cfg: CampaignConfig) -> list[RoundPlan]:
    """The rounds of the campaign, in order (one per declared stage)."""
    plans: list[RoundPlan] = []
    latest: dict[str, str] = {}
    rs_rounds: list[str] = []
    prefs_rounds: list[str] = []
    for i, stage in enumerate(cfg.stages):
        round_id = f"{i:02d}-{stage.kind}" + (f"-{stage.name}" if stage.name else "")
        base = {"kind": stage.kind, "seed": cfg.seed if stage.seed is None else stage.seed}
        if stage.kind == "sandbox":
            plan = RoundPlan(round_id, "sandbox", (), base | {"sandbox": cfg.sandbox.model_dump(mode="json")})
        elif stage.kind == "sft":
            data = () if cfg.sft.data == "sandbox" else (Path(cfg.sft.data),)
            plan = RoundPlan(round_id, "sft", (latest["sandbox"],),
                             base | {"model": cfg.model.model_dump(mode="json"), "sft": cfg.sft.model_dump(mode="json"),
                                     "eval": cfg.eval.model_dump(mode="json")}, data)
        elif stage.kind == "rm":
            rm_cfg = getattr(cfg.reward, stage.name)
            parents = ((latest["sandbox"],) if not rm_cfg.data else ()) + (
                (latest["policy"],) if rm_cfg.init == "sft" else ()) + tuple(prefs_rounds)
            files = () if rm_cfg.init == "sft" else tuple(sorted(Path(rm_cfg.init).glob("*.safetensors")))
            for src in rm_cfg.data:  # the spec and the data file are inputs: a change rebuilds the round
                files += (Path(src.spec),) + ((Path(src.path),) if src.path else ())
            plan = RoundPlan(round_id, "rm", parents,
                             base | {"axis": stage.name, "reward": rm_cfg.model_dump(mode="json"),
                                     "model": {"dtype": cfg.model.dtype,
                                               "trust_remote_code": cfg.model.trust_remote_code}}, files)
        elif stage.kind == "rs":
            prior = rs_rounds if cfg.rs.pool == "all_prior" else rs_rounds[-1:]
            parents = tuple(dict.fromkeys((latest["sandbox"], latest["sft"], latest["rm:helpfulness"],
                                           latest["rm:safety"], *prior)))
            plan = RoundPlan(round_id, "rs", parents,
                             base | {"rs": cfg.rs.model_dump(mode="json"), "combine": cfg.combine.model_dump(mode="json"),
                                     "eval": cfg.eval.model_dump(mode="json"), "model": {"dtype": cfg.model.dtype}})
            rs_rounds.append(round_id)
        elif stage.kind == "prefs":
            pc = cfg.prefs
            rms = (latest.get("rm:helpfulness"), latest.get("rm:safety")) if pc.labeler == "reward_model" else ()
            if None in rms:
                raise AlignError(f"stages[{i}] (prefs): labeler reward_model needs both rm stages before it")
            files = tuple(Path(f) for src in pc.data for f in (src.spec, src.path) if f)
            plan = RoundPlan(round_id, "prefs", (latest["sandbox"], latest["policy"], *rms),  # type: ignore[arg-type]
                             base | {"prefs": pc.model_dump(mode="json"),
                                     "preferences": cfg.sandbox.preferences.model_dump(mode="json"),
                                     "model": {"dtype": cfg.model.dtype}}, files)
            prefs_rounds.append(round_id)
        else:
            plan = RoundPlan(round_id, "eval", (latest["sandbox"], latest["policy"]),
                             base | {"eval": cfg.eval.model_dump(mode="json"),
                                     "model": {"dtype": cfg.model.dtype}})
        plans.append(plan)
        latest[stage.kind] = round_id
        latest[f"{stage.kind}:{stage.name}"] = round_id
        if stage.kind in ("sft", "rs"):
            latest["policy"] = round_id
    return plans


def _input_hashes(plan: RoundPlan, done: dict[str, RoundRecord]) -> dict[str, str]:
    hashes = {f"round:{p}": done[p].manifest["outputs_digest"] for p in plan.parents}
    for f in plan.data_files:
        if not f.is_file():
            raise AlignError(f"{f}: data file of round {plan.id} not found")
        hashes[f"file:{f}"] = sha256_file(f)
    return hashes


def _select(plans: list[RoundPlan], until: str | None) -> list[RoundPlan]:
    if until is None:
        return plans
    for i, p in enumerate(plans):
        if until in (p.id, p.kind):
            return plans[: i + 1]
    raise AlignError(f"--until {until!r}: no such stage or round; planned: {', '.join(p.id for p in plans)}")


def run_campaign(cfg: CampaignConfig, run_dir: Path, *, until: str | None = None,
                 log: Log = _stderr) -> list[RoundResult]:
    """Run or resume the campaign in ``run_dir``; returns the rounds of the plan, in order."""
    from align.stages import STAGE_RUNNERS, StageContext

    store = CampaignStore(run_dir)
    plans = _select(plan_rounds(cfg), until)
    for plan in plans:  # fail on a corrupted manifest before anything is written
        store.read(plan.id)
    results: list[RoundResult] = []
    done: dict[str, RoundRecord] = {}
    with store.lock():
        write_atomic(run_dir / "campaign.yaml", config_to_yaml(cfg))
        for plan in plans:
            inputs = _input_hashes(plan, done)
            existing = store.read(plan.id)
            if (existing and existing.manifest.get("config_hash") == plan.config_hash
                    and existing.manifest.get("input_hashes") == inputs):
                log(f"[{plan.id}] completed earlier: reused")
                done[plan.id] = existing
                results.append(RoundResult(plan.id, existing.path, existing.metrics, reused=True))
                continue
            for parent in plan.parents:
                problems = store.verify(parent)
                if problems:
                    raise AlignError(f"round {plan.id} cannot build on round {parent}, which fails verification:\n  "
                                     + "\n  ".join(problems)
                                     + f"\nrestore the files, or delete {store.rounds_dir / parent} to rebuild it")
            log(f"[{plan.id}] running {plan.kind}" + (" (inputs or config changed)" if existing else ""))
            started = time.time()
            with store.build(plan.id) as tmp:
                ctx = StageContext(run_dir=run_dir, round_id=plan.id, seed=plan.config["seed"], log=log)
                metrics = STAGE_RUNNERS[plan.kind](cfg, {p: done[p].path for p in plan.parents}, tmp, ctx)
                ended = time.time()
                manifest = {"id": plan.id, "kind": plan.kind, "parents": list(plan.parents), "config": plan.config,
                            "config_hash": plan.config_hash, "input_hashes": inputs, "seed": plan.config["seed"],
                            "campaign": cfg.campaign, "code_version": code_version(),
                            "library_versions": library_versions(), "started": started, "ended": ended,
                            "duration_s": round(ended - started, 3), "metrics": metrics}
                done[plan.id] = store.commit(plan.id, tmp, manifest)
            log(f"[{plan.id}] done in {ended - started:.1f}s")
            results.append(RoundResult(plan.id, done[plan.id].path, metrics, reused=False))
    return results


# ---------------------------------------------------------------------------------- reading ---
def load_run(run_dir: Path) -> tuple[CampaignConfig, CampaignStore]:
    """The resolved config and store of an existing run directory."""
    if not run_dir.is_dir():
        raise AlignError(f"{run_dir}: no such run directory")
    if not (run_dir / "campaign.yaml").is_file():
        raise AlignError(f"{run_dir}: not a run directory (no campaign.yaml)")
    return load_config(run_dir / "campaign.yaml"), CampaignStore(run_dir)


def campaign_status(run_dir: Path) -> dict[str, Any]:
    """``{"campaign", "rounds": [{id, kind, status, parents, config_hash, metrics, duration_s}]}`` in
    campaign order; status is ``completed``, ``stale`` (config changed since) or ``pending``."""
    cfg, store = load_run(run_dir)
    rounds = []
    for plan in plan_rounds(cfg):
        record = store.read(plan.id)
        if record is None:
            status, metrics, duration = "pending", {}, None
        else:
            stale = record.manifest.get("config_hash") != plan.config_hash
            status, metrics, duration = ("stale" if stale else "completed"), record.metrics, \
                record.manifest.get("duration_s")
        rounds.append({"id": plan.id, "kind": plan.kind, "status": status, "parents": list(plan.parents),
                       "config_hash": plan.config_hash, "metrics": metrics, "duration_s": duration})
    return {"campaign": cfg.campaign, "rounds": rounds}


def verify_run(run_dir: Path) -> dict[str, list[str]]:
    """Rehash every completed round's outputs: round id -> problems (empty when it verifies)."""
    _, store = load_run(run_dir)
    return {rid: store.verify(rid) for rid in store.round_ids()}


def round_diff(run_dir: Path, a: str, b: str) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Config and metric keys whose values differ between rounds ``a`` and ``b``."""
    _, store = load_run(run_dir)
    records = []
    for rid in (a, b):
        record = store.read(rid)
        if record is None:
            raise AlignError(f"{run_dir}: no completed round {rid!r}; rounds: {', '.join(store.round_ids())}")
        records.append(record)
    out = {}
    for section in ("config", "metrics"):
        fa, fb = _flatten(records[0].manifest.get(section, {})), _flatten(records[1].manifest.get(section, {}))
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
