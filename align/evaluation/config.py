"""The ``eval:`` and ``suites:`` config sections: how a policy is evaluated, and where suites read from."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from align.config import SamplingConfig, Strict, register_section


class EvalConfig(SamplingConfig):
    """Evaluation on held-out prompts: sample answers to each prompt and judge them."""

    temperature: float = Field(0.7, ge=0, description="sampling temperature; 0: greedy")
    samples_per_prompt: int = Field(1, ge=1, description="answers sampled per prompt; the rates average over them "
                                                         "(the same expectation, less sampling noise)")
    batch_size: int = Field(128, ge=1, description="sequences per generation batch")
    max_prompts: int | None = Field(None, ge=1, description="evaluate only the first N held-out prompts")


class SuitesConfig(Strict):
    """Evaluation suites (``eval/*.yaml``): where their data files live and options for their judges."""

    dir: str | None = Field(None, description="a folder of suite files looked up (by name) before eval/")
    data_dir: str | None = Field(None, description="folder the suites' data files are read from (their paths are "
                                                   "relative to it), e.g. ../shared/data")
    judge_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="judge -> options over the "
                                                     "suite's, e.g. {llm: {model: PATH}}")
    target_precision: float = Field(0.89, gt=0, le=1, description="safety_rm judge: its threshold is the best recall "
                                    "at this precision on the sandbox's safety test pairs (align calibrate-gate; "
                                    "Llama 2: 0.89 at 0.15)")


register_section("eval", EvalConfig, description="evaluation of policies on held-out prompts")
register_section("suites", SuitesConfig, description="evaluation suites: data folder and judge options")
