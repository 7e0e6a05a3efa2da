"""The ``align`` command line: a thin layer over the Python API.

One error path: every command turns bad input (``AlignError``) into one line on stderr,
``error: FILE[:LINE]: KEY: what is wrong (what to do)``, and exit code 2; Ctrl-C into one line saying
where it stopped, exit 130. Anything else is a bug: its traceback is printed, exit 1.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from align.errors import AlignError, Interrupted, one_line

app = typer.Typer(
    help="align: a LLaMA-2-style, safety-aware alignment pipeline (SFT, helpfulness and safety reward models, "
         "gated rewards, rejection sampling, PPO) with a built-in sandbox world and gold judges.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ConfigArg = Annotated[Path, typer.Argument(help="campaign YAML, e.g. configs/sandbox.yaml")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", help="override a config key, e.g. --set sft.epochs=1 (repeatable)")]


def _user_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AlignError as e:
            label = "interrupted" if isinstance(e, Interrupted) else "error"
            typer.echo(f"{label}: {one_line(str(e))}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted (Ctrl-C)", err=True)
            raise typer.Exit(Interrupted.exit_code) from None
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # the CLI's own ways out, not bugs
            raise
        except Exception as e:  # not bad input: a bug in align or a library, with its traceback
            from align.distributed import peer_lost

            lost = peer_lost(e)  # under a multi-process launch: a peer died inside a collective (DDP's all-reduce)
            if lost is not None:
                typer.echo(f"error: {one_line(str(lost))}", err=True)
                raise typer.Exit(lost.exit_code) from None
            traceback.print_exc()
            typer.echo("align: unexpected error (a bug, not your input): please report it with the traceback above",
                       err=True)
            raise typer.Exit(1) from None
    return wrapper


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars and no per-round log lines (errors "
                                                           "and results still print)")]


def _quiet(on: bool) -> None:
    if on:
        from align.progress import set_quiet

        set_quiet(True)


@app.callback()
def _global_options(quiet: QuietOpt = False) -> None:
    _quiet(quiet)


@app.command()
@_user_errors
def run(config: ConfigArg,
        run_dir: Annotated[Optional[Path], typer.Option(help="run directory (default: runs/<campaign>)")] = None,
        until: Annotated[Optional[str], typer.Option(help="stop after this stage kind or round id")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="check everything and print the plan (what is "
                                                                  "reused, what is built, the memory each stage "
                                                                  "needs per GPU); write nothing")] = False,
        accelerate_config: Annotated[Optional[Path], typer.Option(
            "--accelerate-config", help="with --dry-run: the accelerate config the memory estimates assume "
                                        "(default: accelerate's default config, else one process)")] = None,
        set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """Run or resume a campaign: check every stage's inputs first, then plan its rounds, reuse completed
    ones (after an integrity check), build the rest in order."""
    from align.campaign import dry_run as plan_run
    from align.campaign import run_campaign
    from align.config import load_config

    _quiet(quiet)
    cfg = load_config(config, set_)
    run_dir = run_dir or Path("runs") / cfg.campaign
    if dry_run:
        from align.memory import sharding_from_accelerate

        record = plan_run(cfg, run_dir, until=until, sharding=sharding_from_accelerate(accelerate_config))
        typer.echo(f"plan for {run_dir} (memory per process: {record['sharding']})")
        for r in record["rounds"]:
            typer.echo(f"{r['id']:<28} {r['action']:<8} " + (f"<- {', '.join(r['parents'])}" if r["parents"] else ""))
            if r["memory"]:
                typer.echo(f"{'':<4}memory {r['memory']['line']} [{r['memory']['assumes']}]")
        for problem in record["problems"]:
            typer.echo(f"problem: {problem}")
        if record["problems"]:
            raise AlignError(f"{len(record['problems'])} problem(s) would stop align run, the first: "
                             f"{record['problems'][0]}")
        typer.echo(f"ok: {sum(r['action'] == 'reuse' for r in record['rounds'])} round(s) to reuse, "
                   f"{sum(r['action'] != 'reuse' for r in record['rounds'])} to build in {run_dir}")
        return
    rounds = run_campaign(cfg, run_dir, until=until)
    for r in rounds:
        gold = r.metrics.get("gold")
        if gold:
            typer.echo(f"{r.id}: " + _gold_line(gold))
    typer.echo(f"run directory: {run_dir}")


@app.command()
@_user_errors
def status(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
           as_json: Annotated[bool, typer.Option("--json", help="print the machine-readable record")] = False) -> None:
    """Show the campaign's rounds: status, key metrics, duration."""
    from rich.console import Console
    from rich.table import Table

    from align.campaign import campaign_status

    record = campaign_status(run_dir)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    table = Table(title=f"campaign {record['campaign']}  ({run_dir})")
    for column in ("round", "kind", "status", "key metrics", "duration"):
        table.add_column(column)
    for r in record["rounds"]:
        gold = r["metrics"].get("gold")
        key = _gold_line(gold) if gold else " ".join(
            f"{k}={str(r['metrics'][k])[:12]}" for k in ("accuracy", "data_hash") if k in r["metrics"])
        duration = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else ""
        table.add_row(r["id"], r["kind"], r["status"], key, duration)
    Console().print(table)
    reward_models = [r for r in record["rounds"] if "cross_axis" in r["metrics"]]
    if reward_models:  # each reward model on each axis's held-out pairs, as Llama 2's Table 7
        sets = sorted({axis for r in reward_models for axis in r["metrics"]["cross_axis"]})
        cross = Table(title="reward models: accuracy on each test set (Llama 2 Table 7; * its own axis)")
        for column in ("round", *(f"{axis} test set" for axis in sets)):
            cross.add_column(column)
        for r in reward_models:
            acc = r["metrics"]["cross_axis"]
            cross.add_row(r["id"], *(f"{acc[a]:.3f}{' *' if a == r['metrics']['axis'] else ''}" if a in acc else ""
                                     for a in sets))
        Console().print(cross)


@app.command()
@_user_errors
def verify(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Rehash every output file of every completed round and check each manifest's own digest; each
    round's result on stdout, and on a failure one error line naming the first bad file (exit 2)."""
    from align.campaign import verify_run

    results = verify_run(run_dir)
    for round_id, problems in results.items():
        typer.echo(f"{round_id}: {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            typer.echo(f"  {problem}")
    failed = [(rid, p) for rid, p in results.items() if p]
    if failed:
        raise AlignError(f"{failed[0][1][0]} ({len(failed)} of {len(results)} rounds fail verification; restore the "
                         f"files, or delete the rounds and run again to rebuild them)")


@app.command()
@_user_errors
def lineage(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Print the round graph: each round under the rounds it was built from."""
    from rich.console import Console
    from rich.tree import Tree

    from align.campaign import campaign_status

    rounds = campaign_status(run_dir)["rounds"]
    order = {r["id"]: i for i, r in enumerate(rounds)}
    children: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in rounds}
    tree = Tree(f"campaign {run_dir}")
    for r in rounds:  # each round once, under its newest parent; its other parents named beside it
        parents = sorted((p for p in r["parents"] if p in order), key=order.__getitem__)
        if parents:
            children[parents[-1]].append(r)

    def add(node: Tree, r: dict[str, Any]) -> None:
        parents = sorted((p for p in r["parents"] if p in order), key=order.__getitem__)
        also = f"  ← also {', '.join(parents[:-1])}" if len(parents) > 1 else ""
        branch = node.add(f"{r['id']} ({r['status']}){also}")
        for child in children[r["id"]]:
            add(branch, child)

    for r in rounds:
        if not any(p in order for p in r["parents"]):
            add(tree, r)
    Console().print(tree)


@app.command()
@_user_errors
def diff(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
         a: Annotated[str, typer.Argument(help="round id, e.g. 01-sft")],
         b: Annotated[str, typer.Argument(help="round id")]) -> None:
    """Config and metric differences between two rounds."""
    from align.campaign import round_diff

    for section, changes in round_diff(run_dir, a, b).items():
        typer.echo(f"{section}: {len(changes)} difference(s)")
        for key, (va, vb) in changes.items():
            typer.echo(f"  {key}: {json.dumps(va)} -> {json.dumps(vb)}")


@app.command()
@_user_errors
def ablate(config: ConfigArg,
           run_dir: Annotated[Optional[Path], typer.Option(help="run directory (default: runs/<campaign>)")] = None,
           workers: Annotated[Optional[int], typer.Option(help="parallel processes (default: from the config, "
                                                                 "else one per core)")] = None,
           set_: SetOpt = None) -> None:
    """Ablate combination rules: shared rounds once, then the rule-dependent stages per rule and seed,
    in parallel; writes <run>/ablation/report.md, report.json and frontier.png."""
    from align.ablate import run_ablation
    from align.config import load_config

    cfg = load_config(config, set_)
    run_dir = run_dir or Path("runs") / cfg.campaign
    record = run_ablation(cfg, run_dir, workers=workers)
    typer.echo((run_dir / "ablation" / "report.md").read_text())
    typer.echo(f"ranking: {' > '.join(r['rule'] for r in record['rules'])}")
    typer.echo(f"report: {run_dir / 'ablation' / 'report.md'}")


def _run_config(run: Optional[Path]):
    """The resolved config of a run directory, or None without one."""
    from align.campaign import load_run

    return load_run(run)[0] if run is not None else None


def _rm_paths(run: Optional[Path], helpfulness_rm: Optional[Path], safety_rm: Optional[Path]) -> tuple[Path, Path]:
    from align.scoring import latest_rm

    if run is None and (helpfulness_rm is None or safety_rm is None):
        raise AlignError("give --run RUN_DIR, or both --helpfulness-rm and --safety-rm")
    return (helpfulness_rm or latest_rm(run, "helpfulness"),  # type: ignore[arg-type]
            safety_rm or latest_rm(run, "safety"))  # type: ignore[arg-type]


def _combine(cfg, rule: Optional[str], params: Optional[list[str]]):
    from pydantic import ValidationError

    from align.combine.config import CombineConfig
    from align.errors import validation_message

    base = cfg.combine if cfg is not None else CombineConfig()
    parsed = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        try:
            parsed[key] = float(value)
        except ValueError:
            raise AlignError(f"--param {item}: expected key=number, e.g. threshold=0.15") from None
    data = base.model_dump() | ({"rule": rule, "params": parsed} if rule else {}) | (
        {"params": parsed} if params and not rule else {})
    try:
        return CombineConfig(**data)
    except ValidationError as e:
        flags = " ".join([f"--rule {rule}"] * bool(rule) + [f"--param {p}" for p in params or []])
        raise AlignError(f"{flags}: {validation_message(e)}") from None


@app.command()
@_user_errors
def score(data: Annotated[Path, typer.Argument(help="JSONL of {prompt, response, is_safety?} rows")],
          out: Annotated[Path, typer.Option(help="JSONL to write, one scored row per input row")],
          run: Annotated[Optional[Path], typer.Option(help="run whose newest rm rounds and combine rule to "
                                                           "use")] = None,
          helpfulness_rm: Annotated[Optional[Path], typer.Option(help="helpfulness RM folder")] = None,
          safety_rm: Annotated[Optional[Path], typer.Option(help="safety RM folder")] = None,
          rule: Annotated[Optional[str], typer.Option(help="combination rule (default: the run's, else "
                                                           "llama2_gate)")] = None,
          param: Annotated[Optional[list[str]], typer.Option(help="rule parameter key=value, e.g. "
                                                                  "threshold=0.2 (repeatable)")] = None) -> None:
    """Score prompt/response pairs with both reward models and a rule: R_h, R_s, the gate's branch,
    the combined value and the whitened-logit reward."""
    from align.config import ModelConfig
    from align.records import write_jsonl
    from align.scoring import load_reward_models, read_scoring_rows, score_rows

    from align.preflight import first, out_file_problems

    first(out_file_problems(out, "--out"))
    cfg = _run_config(run)
    combine = _combine(cfg, rule, param)
    rows = read_scoring_rows(data)
    h, s = _rm_paths(run, helpfulness_rm, safety_rm)
    rms = load_reward_models(h, s, cfg.reward if cfg else None, cfg.model if cfg else ModelConfig())
    scored = score_rows(rows, rms, combine)
    write_jsonl(out, scored)
    branches = {b: sum(r.get("branch") == b for r in scored) for b in ("safety_tag", "safety_low", "helpfulness")}
    typer.echo(f"scored {len(scored)} rows with {combine.rule} -> {out}"
               + (f"  (gate: {branches})" if combine.rule == "llama2_gate" else ""))


@app.command("calibrate-gate")
@_user_errors
def calibrate_gate_(run: Annotated[Optional[Path], typer.Option(help="run whose newest safety RM and sandbox "
                                                                      "safety test pairs to use")] = None,
                    safety_rm: Annotated[Optional[Path], typer.Option(help="safety RM folder")] = None,
                    data: Annotated[Optional[Path], typer.Option(help="labelled JSONL {prompt, response, safe} "
                                                                      "(default: the run's sandbox safety test "
                                                                      "pairs)")] = None,
                    target_precision: Annotated[float, typer.Option(help="precision the threshold must reach "
                                                                         "(Llama 2: 0.89 at t=0.15)")] = 0.89,
                    as_json: Annotated[bool, typer.Option("--json", help="print the record as JSON")] = False) -> None:
    """Sweep the gate's threshold t: precision and recall of R_s < t as a detector of unsafe responses,
    and the threshold with the best recall at the target precision."""
    from align.config import ModelConfig
    from align.reward.client import RewardModel
    from align.reward.config import RewardModelConfig
    from align.sandbox.build import read_preferences
    from align.scoring import calibrate_gate, labelled_from_jsonl, labelled_from_pairs, latest_rm, latest_world

    if not 0 < target_precision <= 1:
        raise AlignError(f"--target-precision {target_precision:g}: a precision is in (0, 1] (Llama 2: 0.89)")
    if safety_rm is None and run is None:
        raise AlignError("give --run RUN_DIR or --safety-rm")
    cfg = _run_config(run)
    rm_path = safety_rm or latest_rm(run, "safety")  # type: ignore[arg-type]
    if data is not None:
        prompts, responses, unsafe = labelled_from_jsonl(data)
    elif run is not None:
        prompts, responses, unsafe = labelled_from_pairs(read_preferences(latest_world(run), "safety", "eval"))
    else:
        raise AlignError("give --data (labelled responses) or --run (the sandbox's safety test pairs)")
    rm = RewardModel.load(rm_path, cfg.reward.safety if cfg else RewardModelConfig(),
                          cfg.model if cfg else ModelConfig())
    record = {"safety_rm": str(rm_path), **calibrate_gate(rm, prompts, responses, unsafe,
                                                           target_precision=target_precision)}
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo(f"safety RM {rm_path}: {record['responses']} labelled responses, {record['unsafe']} unsafe")
    typer.echo(f"{'t':>6} {'flagged':>8} {'precision':>9} {'recall':>7}")
    for r in record["sweep"]:
        precision = "-" if r["precision"] is None else f"{r['precision']:.3f}"
        typer.echo(f"{r['threshold']:>6.2f} {r['flagged']:>8.3f} {precision:>9} {r['recall']:>7.3f}")
    chosen = record["threshold"]
    typer.echo(f"threshold for precision >= {target_precision}: "
               + (f"{chosen} (set combine.params.threshold: {chosen})" if chosen is not None else "none reaches it"))


def _options(items: Optional[list[str]], flag: str, nested: bool) -> dict[str, Any]:
    """``key=value`` items (``judge.key=value`` when ``nested``) with YAML-typed values."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or not key or (nested and (len(parts) != 2 or not all(parts))):
            raise AlignError(f"{flag} {item}: expected {'JUDGE.' if nested else ''}KEY=VALUE")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if nested:
            out.setdefault(parts[0], {})[parts[1]] = value
        else:
            out[key] = value
    return out


@app.command("eval")
@_user_errors
def eval_(run_dir: Annotated[Path, typer.Argument(help="a run directory (a new folder when --model is given)")],
          suite: Annotated[str, typer.Option(help="suite name (eval/<name>.yaml) or a suite file")] = "sandbox-heldout",
          round_: Annotated[Optional[str], typer.Option("--round", help="policy round to evaluate (default: the "
                                                                        "newest)")] = None,
          model: Annotated[Optional[Path], typer.Option(help="evaluate this local checkpoint (safetensors) "
                                                             "instead")] = None,
          data_dir: Annotated[Optional[Path], typer.Option(help="folder the suite's data files are under")] = None,
          judge_option: Annotated[Optional[list[str]], typer.Option(help="a judge's option, e.g. "
                                                                         "llm.model=PATH (repeatable)")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print the round's metrics as JSON")] = False,
          set_: SetOpt = None) -> None:
    """Evaluate a round's policy, or any local checkpoint, on an evaluation suite: generate (batched,
    resumable), judge with the suite's judges, and store it as an eval round of the run."""
    from align.campaign import evaluate_round
    from align.config import load_config

    if model is not None and round_ is not None:
        raise AlignError("give --round or --model, not both")
    if (run_dir / "campaign.yaml").is_file():
        cfg = load_config(run_dir / "campaign.yaml", set_)
    elif model is None:
        raise AlignError(f"{run_dir}: not a run directory (no campaign.yaml); to evaluate a checkpoint, give --model")
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the defaults, with --set applied as to a file
            (Path(tmp) / "eval.yaml").write_text("campaign: eval\n")
            cfg = load_config(Path(tmp) / "eval.yaml", set_)
    suites = cfg.suites.model_dump()
    suite_path = Path(suite)
    if suite_path.suffix in (".yaml", ".yml"):
        if not suite_path.is_file():
            raise AlignError(f"--suite {suite}: no such suite file")
        suites["dir"], suite = str(suite_path.resolve().parent), suite_path.stem
    if data_dir is not None:
        if not data_dir.is_dir():
            raise AlignError(f"--data-dir {data_dir}: no such folder")
        suites["data_dir"] = str(data_dir.resolve())
    for judge, options in _options(judge_option, "--judge-option", nested=True).items():
        suites["judge_options"][judge] = {**suites["judge_options"].get(judge, {}), **options}
    cfg = cfg.model_copy(update={"suites": type(cfg.suites)(**suites)})
    result = evaluate_round(run_dir, suite, policy=round_, model=model, cfg=cfg)
    if as_json:
        typer.echo(json.dumps(result.metrics, indent=2))
        return
    record = result.metrics["suite"]
    typer.echo(f"{result.id}: {record['suite']} on {record['n']} prompts x {record['samples_per_prompt']}"
               + (" (reused)" if result.reused else ""))
    for name, m in record["metrics"].items():
        ci = f" [{m['ci95'][0]}, {m['ci95'][1]}]" if m["ci95"] else ""
        typer.echo(f"  {name} ({m['judge']}, over {m['over']}: n={m['n']}): {m['value']}{ci}")
    for judge, why in record.get("skipped_judges", {}).items():
        typer.echo(f"  judge {judge} skipped: {why}")
    typer.echo(f"round: {result.path}")


@app.command()
@_user_errors
def judge(file: Annotated[Path, typer.Argument(help="CSV or JSONL of prompt/response rows")],
          judge_name: Annotated[str, typer.Option("--judge", help="refusal, safety_rm, helpfulness_rm, llm or "
                                                                  "sandbox_gold")],
          prompt_field: Annotated[str, typer.Option(help="the field holding the prompt")] = "prompt",
          response_field: Annotated[str, typer.Option(help="the field holding the response")] = "response",
          run: Annotated[Optional[Path], typer.Option(help="run whose reward models (and sandbox world) the judge "
                                                           "uses")] = None,
          option: Annotated[Optional[list[str]], typer.Option(help="a judge option, e.g. threshold=0.2 or "
                                                                   "model=PATH (repeatable)")] = None) -> None:
    """Judge prompt/response pairs produced anywhere (another model's outputs): one JSON object per input
    row on stdout, in input order (label, score, every label and score); a summary on stderr."""
    import time
    from collections import Counter

    from align.evaluation.judge import JUDGES, get_judge, judge_all
    from align.evaluation.judge_file import read_pairs, verdict_record
    from align.records import Prompt

    if judge_name not in JUDGES:
        raise AlignError(f"--judge {judge_name!r}: unknown judge; known judges: {', '.join(sorted(JUDGES))}")
    rows = read_pairs(file, prompt_field, response_field)
    options = _options(option, "--option", nested=False)
    prompts = [Prompt(id=f"row-{r['line']}", text=r["prompt"], family="benign", category="", is_safety=False,
                      split="data") for r in rows]
    if judge_name == "sandbox_gold":
        prompts = _sandbox_prompts(run, file, rows)
    elif judge_name in ("safety_rm", "helpfulness_rm") and "rm" not in options:
        options |= _run_rm(run, judge_name, options)
    t0 = time.perf_counter()
    verdicts = judge_all(get_judge(judge_name, **options), prompts, [r["response"] for r in rows])
    records = [verdict_record(judge_name, v) for v in verdicts]
    for r in records:
        typer.echo(json.dumps(r))
    labels = Counter(r["label"] for r in records)
    scores = [r["score"] for r in records if r["score"] is not None]
    typer.echo(f"judge {judge_name}: {len(records)} rows in {time.perf_counter() - t0:.1f}s; labels "
               + ", ".join(f"{k}={v} ({v / len(records):.1%})" for k, v in labels.most_common())
               + (f"; mean score {sum(scores) / len(scores):.4f}" if scores else ""), err=True)


def _run_rm(run: Optional[Path], judge_name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A reward-model judge's options from a run: its newest reward model and, for safety_rm, the
    threshold calibrated on its sandbox's safety test pairs (unless given)."""
    from align.scoring import latest_rm

    if run is None:
        raise AlignError(f"--judge {judge_name}: give --run RUN_DIR or --option rm=PATH")
    axis = "safety" if judge_name == "safety_rm" else "helpfulness"
    out: dict[str, Any] = {"rm": str(latest_rm(run, axis))}
    if judge_name == "safety_rm" and "threshold" not in options:
        from align.campaign import load_run
        from align.reward.client import RewardModel
        from align.stages.eval import calibrate
        from align.store import CampaignStore

        cfg = load_run(run)[0]
        rm = RewardModel.load(Path(out["rm"]), cfg.reward.safety, cfg.model)
        world = CampaignStore(run).latest("sandbox")
        record = calibrate(rm, world.path if world else None, world.id if world else "",
                           target_precision=cfg.suites.target_precision,
                           fallback=float(cfg.combine.params.get("threshold", 0.15)))
        typer.echo(f"safety_rm threshold {record['threshold']}: {record['source']}", err=True)
        out |= {"model": rm, "threshold": record["threshold"]}
    return out


def _sandbox_prompts(run: Optional[Path], file: Path, rows: list[dict[str, Any]]) -> list:
    """The sandbox prompt records (with their gold answers) of the rows' prompts, matched by text."""
    from align.sandbox.build import read_prompts
    from align.scoring import latest_world

    if run is None:
        raise AlignError("--judge sandbox_gold: give --run RUN_DIR (the sandbox world the prompts come from)")
    world = latest_world(run)
    by_text = {p.text: p for split in ("eval", "rl") for p in read_prompts(world, split)}
    missing = next((r for r in rows if r["prompt"] not in by_text), None)
    if missing is not None:
        raise AlignError(f"{file}: row {missing['line']}: the prompt is not one of the sandbox world's prompts")
    return [by_text[r["prompt"]] for r in rows]


@app.command()
@_user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
           name: Annotated[str, typer.Option(help="report name: writes <run>/reports/<name>/")] = "report") -> None:
    """Write the safety evaluation report of a run: reports/<name>/report.html (self-contained),
    report.json (every number in the page) and report.md."""
    from align.report import write_report

    html, *others = write_report(run_dir, name)
    typer.echo(f"report: {html}")
    for path in others:
        typer.echo(f"        {path}")


@app.command()
@_user_errors
def sandbox(out: Annotated[Path, typer.Argument(help="folder to write the world into")],
            config: Annotated[Path, typer.Option(help="campaign YAML whose sandbox section to use")] = Path(
                "configs/sandbox.yaml"),
            set_: SetOpt = None) -> None:
    """Build the sandbox world (prompts, demonstrations, preferences, tokenizer) into a folder."""
    from align.config import load_config
    from align.sandbox.build import generate_world, write_world

    cfg = load_config(config, set_)
    if out.exists() and any(out.iterdir()):
        raise AlignError(f"{out}: exists and is not empty")
    summary = write_world(generate_world(cfg.sandbox, cfg.seed), cfg.sandbox, cfg.seed, out)
    typer.echo(json.dumps({k: summary[k] for k in ("sandbox_version", "seed", "data_hash", "counts")}, indent=2))


def _gold_line(gold: dict[str, Any]) -> str:
    keys = ("violation_rate", "false_refusal_rate", "helpful_accuracy", "well_formed_rate", "n")
    return "  ".join(f"{k}={gold[k]}" for k in keys)


def main() -> None:
    import os

    # no weight-loading bars on every load (our stages keep their own); read when transformers is first
    # imported, which a command that loads no model never does
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the launcher stops the others when one process dies
        import signal

        def stopped(signum: int, frame: Any) -> None:
            from align.distributed import PeerLost

            raise PeerLost(f"process {os.environ.get('RANK', '0')}: another process of this run stopped (the launcher "
                           "ended this one); the round being built is not committed: align run resumes from the last "
                           "complete round")

        signal.signal(signal.SIGTERM, stopped)
    if int(os.environ.get("RANK", "0")) > 0:  # under accelerate launch the main process speaks for the run
        from align.progress import set_quiet

        set_quiet(True)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process); errors stay on stderr
    try:
        app()
    finally:
        from align import distributed

        distributed.shutdown()  # under accelerate launch: the process group, torn down before exit


if __name__ == "__main__":
    sys.exit(main())
