"""The knobs of one reward model (Llama 2 section 3.2.2); the ``reward:`` section holds one per axis."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from align.config import TrainingConfig
from align.data import PairSource


class RewardModelConfig(TrainingConfig):
    """One reward model: a one-output sequence classifier trained with the binary ranking loss and a
    rating margin, for one epoch with a cosine schedule.

    The training knobs' defaults are the paper's: lr 1e-5 (5e-6 at 70B), cosine to 10%, warm-up 3% of
    steps (at least 5), one epoch (longer overfits), initialised from the chat model; a batch of
    ``batch_size`` pairs is one forward pass of twice as many sequences. A tiny sandbox model needs a
    far larger lr.
    """

    init: str = Field("sft", description="'sft': the newest policy round's checkpoint (the paper's choice), or a "
                                         "local model path (e.g. a MiniLM encoder)")
    data: list[PairSource] = Field(default_factory=list, description="pair sources (both axes may appear; each "
                                   "pair's axis comes from its spec); empty: the sandbox world's pairs")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share of each data source (seeded split)")
    margin: Literal["none", "small", "large"] = Field("small", description="m(r) table, Llama 2 Table 27")
    other_axis_share: float = Field(0.5, ge=0, lt=1, description="share of the other axis's pairs in the mix: "
                                                                  "0.5 helpfulness ('equal part'), 0.1 safety (90/10)")
    safety_aux_weight: float = Field(0.0, ge=0, description="weight of the safety sign term (safe > 0 > unsafe)")
    center_weight: float = Field(0.0, ge=0, description="weight of reward centering mean((r_c + r_r)^2)")
    head: Literal["last", "loglik"] = Field("last", description="'last': the scalar head at the last token (Llama "
                                            "2); 'loglik': plus c times the answer's mean log-likelihood under the "
                                            "backbone's LM head, c learned (causal LMs; align.reward.head)")
    loglik_coef: float = Field(1.0, description="head: loglik: the initial weight c of the mean log-likelihood")
    lm_coef: float = Field(0.0, ge=0, description="GRM: weight of the SFT loss on chosen answers through the "
                                                  "policy's LM head (keeps the backbone's knowledge; causal LMs)")
    disable_dropout: bool = Field(True, description="train without dropout (TRL's default): the reward is a "
                                                    "deterministic function of the text, and attention runs fused")
    share_prompt: bool = Field(True, description="causal LMs: read each pair's prompt once, its KV cache shared by "
                                                 "the chosen and rejected answers (same rewards, fewer tokens)")
    eval_batch_size: int = Field(128, ge=1, description="sequences per scoring batch")
