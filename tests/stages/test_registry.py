"""The stage registry (align/stages/__init__.py): a stage kind declared in one place. A toy stage
registered from this file alone gets its config section, its parents, a round with a manifest,
resume after SIGKILL, verification, and rebuilds from the fields it reads."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
from conftest import manifest, statuses
from pydantic import Field

import align.config
import align.stages
from align.campaign import run_campaign, verify_run
from align.config import Strict, load_config
from align.errors import AlignError
from align.sandbox.build import read_prompts
from align.stages import Planned, Stage, StageContext, get_stage, register, stage_kinds


class ToyConfig(Strict):
    """The toy stage: counts the world's RL prompts, times a factor."""

    factor: int = Field(2, ge=1, description="what the count is multiplied by")


def _toy_parents(planned: Planned, cfg, spec) -> list[str]:
    return [planned.latest("sandbox")]


def _toy_run(ctx: StageContext) -> dict:
    count = len(read_prompts(ctx.parents.sandbox.path, "rl")) * ctx.cfg.toy.factor  # 1. count  2. scale
    ctx.out.file("count.txt").write_text(f"{count}\n")  # 3. write
    return {"count": count}


TOY = Stage(kind="toy", run=_toy_run, parents=_toy_parents, sections={"toy": ToyConfig})

CONFIG = """campaign: toy
stages: [{kind: sandbox}, {kind: toy}]
sandbox:
  sft_demonstrations: 40
  rl_prompts: 12
  eval_prompts: 8
  tokenizer_vocab_size: 300
  preferences: {helpfulness_pairs: 10, safety_pairs: 10, eval_pairs: 4}
toy: {factor: 3}
"""


@pytest.fixture
def toy_stage():
    """Register the toy stage for one test; restore the registry and the config sections after."""
    stage_kinds()  # the built-in kinds, discovered before the snapshot
    stages, sections = dict(align.stages._REGISTRY), dict(align.config._SECTIONS)
    register(TOY)
    yield TOY
    align.stages._REGISTRY.clear()
    align.stages._REGISTRY.update(stages)
    align.config._SECTIONS.clear()
    align.config._SECTIONS.update(sections)
    align.config._COMPOSED = None


def _run_and_crash(path: str, run_dir: str) -> None:
    """A forked child: run the campaign, SIGKILLed once the toy round's files are written."""
    os.environ["ALIGN_CRASH_AT"] = "files-written:01-toy"
    run_campaign(load_config(path), run_dir=__import__("pathlib").Path(run_dir), log=lambda m: None)


def test_a_toy_stage_from_this_file_runs_resumes_verifies_and_rebuilds(toy_stage, tmp_path):
    assert "toy" in stage_kinds() and get_stage("toy") is TOY
    (tmp_path / "toy.yaml").write_text(CONFIG)
    cfg = load_config(tmp_path / "toy.yaml")
    assert cfg.toy.factor == 3  # its section is part of the config, validated by its model
    run_dir = tmp_path / "run"

    # killed at the moment the toy round's files are written: the world survives, the toy round does not
    child = multiprocessing.get_context("fork").Process(target=_run_and_crash, args=(str(tmp_path / "toy.yaml"),
                                                                                      str(run_dir)))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert (run_dir / "rounds" / "00-sandbox" / "manifest.json").is_file()
    assert not (run_dir / "rounds" / "01-toy").exists()

    # resume: the world is reused, the toy round built
    logs: list[str] = []
    results = run_campaign(cfg, run_dir, log=logs.append)
    assert [r.reused for r in results] == [True, False]
    m = manifest(run_dir, "01-toy")
    assert m["metrics"] == {"count": 36} and m["parents"] == ["00-sandbox"] and m["kind"] == "toy"
    assert m["config"] == {"seed": 0, "toy.factor": 3}  # what it read, and nothing else
    assert (run_dir / "rounds" / "01-toy" / "count.txt").read_text() == "36\n"
    assert verify_run(run_dir) == {"00-sandbox": [], "01-toy": []}

    # what it reads rebuilds it; what it does not read does not
    assert statuses(run_dir, "toy.factor=4") == {"00-sandbox": "completed", "01-toy": "stale"}
    assert statuses(run_dir, "sft.lr=0.5") == {"00-sandbox": "completed", "01-toy": "completed"}
    assert [r.reused for r in run_campaign(cfg, run_dir, log=logs.append)] == [True, True]
    bigger = load_config(tmp_path / "toy.yaml", ["toy.factor=4"])
    assert [r.reused for r in run_campaign(bigger, run_dir, log=logs.append)] == [True, False]
    assert manifest(run_dir, "01-toy")["metrics"] == {"count": 48}


def test_a_stage_finds_the_rounds_it_builds_on_or_the_config_names_the_stage(toy_stage, tmp_path):
    (tmp_path / "bad.yaml").write_text("campaign: toy\nstages:\n  - {kind: toy}\n")
    with pytest.raises(AlignError, match=r"bad.yaml:3: stages\[0\] \(toy\): needs an earlier sandbox stage"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("campaign: toy\nstages: [{kind: sandbox}, {kind: toy}]\ntoy: {factor: 0}\n")
    with pytest.raises(AlignError, match=r"bad.yaml:3: toy.factor: Input should be greater than or equal to 1"):
        load_config(tmp_path / "bad.yaml")


def test_unknown_kinds_and_names_are_config_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("campaign: x\nstages:\n  - {kind: sandbox}\n  - {kind: ppo2}\n")
    with pytest.raises(AlignError, match=r"c.yaml:4: stages.1.kind: .*unknown stage kind 'ppo2'; known kinds: "):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("campaign: x\nstages:\n  - {kind: sandbox}\n  - {kind: rm, name: honesty}\n")
    with pytest.raises(AlignError, match=r"c.yaml:4: stages.1: .*a rm stage is named helpfulness or safety"):
        load_config(tmp_path / "c.yaml")


def test_a_kind_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register(Stage(kind="rs", run=_toy_run, parents=_toy_parents))


def test_every_built_in_stage_declares_its_parts():
    for kind in ("sandbox", "sft", "rm", "rs", "prefs", "eval", "ppo"):
        stage = get_stage(kind)
        assert stage.doc and callable(stage.run) and callable(stage.parents), kind
    assert sorted(k for k in stage_kinds() if get_stage(k).policy) == ["ppo", "rs", "sft"]
    assert sorted(k for k in stage_kinds() if get_stage(k).uses_rule) == ["ppo", "rs"]
