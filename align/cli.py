"""The ``align`` command line: a thin layer over the Python API.

Every command turns bad input (``AlignError``) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from align.errors import AlignError

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
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
    return wrapper


@app.command()
@_user_errors
def run(config: ConfigArg,
        run_dir: Annotated[Optional[Path], typer.Option(help="run directory (default: runs/<campaign>)")] = None,
        until: Annotated[Optional[str], typer.Option(help="stop after this stage: sandbox | sft")] = None,
        set_: SetOpt = None) -> None:
    """Run or resume a campaign: build the sandbox world, SFT, gold evaluation."""
    from align.campaign import run_campaign
    from align.config import load_config

    cfg = load_config(config, set_)
    run_dir = run_dir or Path("runs") / cfg.campaign
    rounds = run_campaign(cfg, run_dir, until=until)
    for r in rounds:
        gold = r.metrics.get("gold")
        if gold:
            typer.echo(f"{r.id}: " + _gold_line(gold))
    typer.echo(f"run directory: {run_dir}")


@app.command("eval")
@_user_errors
def eval_(run_dir: Annotated[Path, typer.Argument(help="a run directory holding rounds/00-sandbox")],
          round_: Annotated[str, typer.Option("--round", help="round whose model/ to evaluate")] = "01-sft",
          model: Annotated[Optional[Path], typer.Option(help="evaluate this local checkpoint instead")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print the full metrics as JSON")] = False,
          set_: SetOpt = None) -> None:
    """Gold-evaluate a round's model, or any local checkpoint, on the run's held-out sandbox prompts."""
    from align.config import load_config
    from align.stages import evaluate_checkpoint

    cfg_path = run_dir / "campaign.yaml"
    if not cfg_path.is_file():
        raise AlignError(f"{run_dir}: not a run directory (no campaign.yaml)")
    cfg = load_config(cfg_path, set_)
    model_dir = model or run_dir / "rounds" / round_ / "model"
    gold = evaluate_checkpoint(model_dir, run_dir / "rounds" / "00-sandbox", cfg)
    typer.echo(json.dumps(gold, indent=2) if as_json else _gold_line(gold))


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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars on every load; our stages keep their own
    app()


if __name__ == "__main__":
    sys.exit(main())
