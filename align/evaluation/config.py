"""The ``eval:`` config section: how a policy is evaluated on held-out prompts."""

from __future__ import annotations

from pydantic import Field

from align.config import SamplingConfig, register_section


class EvalConfig(SamplingConfig):
    """Evaluation on held-out prompts: sample answers to each prompt and judge them."""

    temperature: float = Field(0.7, ge=0, description="sampling temperature; 0: greedy")
    samples_per_prompt: int = Field(1, ge=1, description="answers sampled per prompt; the rates average over them "
                                                         "(the same expectation, less sampling noise)")
    batch_size: int = Field(128, ge=1, description="sequences per generation batch")
    max_prompts: int | None = Field(None, ge=1, description="evaluate only the first N held-out prompts")


register_section("eval", EvalConfig, description="evaluation of policies on held-out prompts")
