"""align: a LLaMA-2-style, safety-aware alignment pipeline for Hugging Face language models.

Public API: load a campaign config, run it, and evaluate checkpoints against the sandbox's
gold judges. See README.md and DESIGN.md.
"""

from align.campaign import RoundResult, run_campaign
from align.config import CampaignConfig, load_config
from align.errors import AlignError
from align.evaluation import gold_evaluate, gold_metrics
from align.sandbox.build import generate_world, write_world
from align.sandbox.judges import judge_helpfulness, judge_safety
from align.sft import answer_only_loss, train_sft

__version__ = "0.1.0"
__all__ = [
    "AlignError", "CampaignConfig", "RoundResult", "answer_only_loss", "generate_world", "gold_evaluate",
    "gold_metrics", "judge_helpfulness", "judge_safety", "load_config", "run_campaign", "train_sft", "write_world",
]
