"""align: a LLaMA-2-style, safety-aware alignment pipeline for Hugging Face language models.

Public API: load a campaign config, run it, evaluate rounds or checkpoints on evaluation suites
(``evaluate_round``, ``load_suite``, ``evaluate_suite``, judges by name) and write safety reports
(``write_report``). See README.md and DESIGN.md. Names load on first use, so ``import align`` (and
the CLI) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AlignError": "align.errors", "CampaignConfig": "align.config", "load_config": "align.config",
    "parse_config": "align.config", "RoundResult": "align.campaign", "run_campaign": "align.campaign",
    "plan_rounds": "align.campaign", "run_ablation": "align.ablate",
    "Stage": "align.stages", "StageContext": "align.stages", "register": "align.stages",
    "Judge": "align.evaluation.judge", "Verdict": "align.evaluation.judge", "get_judge": "align.evaluation.judge",
    "judge_all": "align.evaluation.judge", "load_suite": "align.evaluation.suites",
    "evaluate_suite": "align.evaluation.evaluate", "evaluate_round": "align.campaign",
    "write_report": "align.report",
    "evaluate_policy": "align.evaluation.policy", "policy_metrics": "align.evaluation.metrics",
    "generate_world": "align.sandbox.build", "write_world": "align.sandbox.build",
    "judge_helpfulness": "align.sandbox.judges", "judge_safety": "align.sandbox.judges",
    "answer_only_loss": "align.sft", "finetune": "align.sft", "train": "align.training",
    "RewardModels": "align.reward.client", "score_responses": "align.reward.client",
    "combine_rewards": "align.combine", "resolve_rule": "align.combine", "sample_k": "align.generate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'align' has no attribute {name!r}")
