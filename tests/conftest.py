from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"


def align_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the ``align`` CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "align.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def align_app(*args: str) -> tuple[int, str, str]:
    """Run the ``align`` CLI in this process (typer's runner): (exit code, stdout, stderr). For the many
    cases that fail before any work, where a subprocess would spend its time importing."""
    from typer.testing import CliRunner

    from align.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="session")
def completed_smoke_run(tmp_path_factory) -> tuple[Path, str]:
    """A finished ``align run configs/smoke.yaml`` (read-only: copy it before changing anything)."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    result = align_cli("run", str(SMOKE), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir, result.stdout


@pytest.fixture
def smoke_copy(completed_smoke_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(completed_smoke_run[0], run_dir)
    return run_dir


def statuses(run_dir: Path, *overrides: str) -> dict[str, str]:
    """Round id -> what `align run` of the run's config with ``--set`` ``overrides`` would do to it:
    ``completed`` (reuse it) or ``stale`` (rebuild it)."""
    from align.campaign import campaign_status
    from align.config import load_config

    cfg = load_config(run_dir / "campaign.yaml", list(overrides))
    return {r["id"]: r["status"] for r in campaign_status(run_dir, cfg)["rounds"]}


def manifest(run_dir: Path, round_id: str) -> dict:
    return json.loads((run_dir / "rounds" / round_id / "manifest.json").read_text())


# --- a tiny policy and tokenizer, and fixed reward models, for unit tests ----------------------
TEXTS = ["Where does Kesjor live? Kesjor lives in Lunia.", "The answer is Lunia.", "What is 3 plus 4?",
         "The answer is 7.", "I can't help with that.", "List: apple, pear, plum. What is the first word?"] * 20
PROMPTS = ["What is 3 plus 4?", "Hi", "Where does Kesjor live? Kesjor lives in Lunia. Tell me, please."]


@pytest.fixture(scope="session")
def tokenizer():
    from align.sandbox.tokenizer import train_tokenizer

    return train_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture(scope="session")
def policy(tokenizer):
    from align.sandbox.model import tiny_llama

    return tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=256, seed=0)


class FixedRewardModels:
    """R_h per response text, R_s 0.9 (the gate reads R_h on an untagged prompt)."""

    def __init__(self, r_h: dict[str, float]):
        self.r_h = r_h

    def probabilities(self, prompts, responses):
        import torch

        return (torch.tensor([self.r_h[r] for r in responses], dtype=torch.float64),
                torch.full((len(responses),), 0.9, dtype=torch.float64))
