"""vLLM as the sampler (``generation.backend: vllm``): the same ``sample_k`` interface as the built-in
sampler, with the engine colocated with training on each process's GPU (TRL's colocate mode).

- One engine per process, created on first use from the checkpoint the policy was loaded from, with
  ``gpu_memory_utilization`` of the GPU (the rest stays with training).
- Before each draw the engine's weights are those of the model asked to sample: its state dict (a LoRA
  policy's merged weights) goes through the engine's ``load_weights``, and the prefix cache is reset; so a
  PPO iteration samples from the policy its last update left, and an RS round from its parent.
- Each process draws its share of the prompts (``distributed.shard`` over fixed batches, each with its
  own seed) and every process gets all the samples back in prompt order, as with the built-in sampler.
- Log-probabilities are vLLM's raw ones (before temperature and top-p): ``Sample.logprobs``. PPO's old
  log-probabilities are then recomputed by teacher forcing (``sampling_logprobs`` is None), since the
  engine's numerics are not the trainer's.

``vllm`` is an optional dependency (``pip install 'align[vllm]'``, a CUDA GPU); choosing this backend
without it fails when the config is loaded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from align import distributed
from align.config import Strict, register_section
from align.errors import AlignError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from align.generate import Sample


class GenerationConfig(Strict):
    """Which engine samples answers (RS, preference refresh, PPO rollouts, evaluation)."""

    backend: Literal["hf", "vllm"] = Field("hf", description=(
        "hf: align's sampler on the Hugging Face model (shared prompt cache, no extra memory); vllm: a vLLM engine "
        "colocated with training (pip install 'align[vllm]'; a CUDA GPU), weights synced before each draw"))
    gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description="vllm: the share of the GPU its engine takes "
                                                                        "(weights and KV cache)")
    max_model_len: int | None = Field(None, ge=16, description="vllm: longest prompt + answer (None: the model's)")

    @model_validator(mode="after")
    def _installed(self) -> GenerationConfig:
        if self.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError("backend: vllm needs the vllm package, which is not installed (pip install "
                             "'align[vllm]' on a machine with a CUDA GPU), or use backend: hf")
        return self


register_section("generation", GenerationConfig, description="the sampling engine")

_ENGINE: dict[str, Any] = {}  # this process's engine: {"llm": LLM}
_ACTIVE: list[GenerationConfig] = []  # the running campaign's choice (align run sets it)


def activate(cfg: GenerationConfig | None) -> None:
    """Make ``cfg`` the engine every ``generate.sample_k`` of this process uses (None: the built-in one)."""
    _ACTIVE[:] = [cfg] if cfg is not None and cfg.backend == "vllm" else []


def active() -> GenerationConfig | None:
    return _ACTIVE[0] if _ACTIVE else None


def _engine(model: PreTrainedModel, cfg: GenerationConfig, seed: int) -> Any:
    from vllm import LLM

    source = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
    if not source:
        raise AlignError("generation.backend: vllm samples from a model loaded from a folder (the policy's round)")
    if "llm" not in _ENGINE:
        rank, size = distributed.world()
        _ENGINE["llm"] = LLM(model=str(source), gpu_memory_utilization=cfg.gpu_memory_utilization,
                             max_model_len=cfg.max_model_len, seed=seed + rank, logprobs_mode="raw_logprobs",
                             **({"distributed_executor_backend": "external_launcher"} if size > 1 else {}))
    return _ENGINE["llm"]


def merged_state(model: PreTrainedModel) -> dict[str, Any]:
    """The weights vLLM loads: the model's whole state dict (gathered when FSDP shards it: every process
    calls this), a LoRA model's adapters merged into its base weights and named as the base model's."""
    from peft import PeftModel

    from align.models import full_state, merged_lora_state

    state = full_state(model) or dict(model.state_dict())
    return merged_lora_state(model, state) if isinstance(model, PeftModel) else state


def sync_weights(llm: Any, model: PreTrainedModel) -> None:
    """The engine's weights made ``model``'s (and its prefix cache emptied: the cached prompts were
    computed with the old weights)."""
    llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(list(merged_state(model).items()))
    llm.reset_prefix_cache()


def sample_k(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ids: Sequence[list[int]],
             cfg: GenerationConfig, *, k: int, temperature: float, top_p: float, max_new_tokens: int, batch_size: int,
             seed: int) -> list[list[Sample]]:
    """K samples per prompt (``ids``: the prompts' token ids), drawn by the engine synced to ``model``."""
    from vllm import SamplingParams

    from align.generate import Sample

    llm = _engine(model, cfg, seed)
    sync_weights(llm, model)
    eos = tokenizer.eos_token_id
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    done = []
    for b, idx in distributed.my_batches(order, batch_size):
        params = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                seed=distributed.batch_seed(seed, b), logprobs=0,
                                stop_token_ids=[eos] if eos is not None else None)
        outputs = llm.generate([{"prompt_token_ids": list(ids[i])} for i in idx], sampling_params=params,
                               use_tqdm=False)
        batch = []
        for i, request in zip(idx, outputs):
            for c in request.outputs:
                tokens = list(c.token_ids)
                logprobs = [step[t].logprob for step, t in zip(c.logprobs or [], tokens)]
                finished = c.finish_reason == "stop" and bool(tokens) and tokens[-1] == eos
                text = tokenizer.decode(tokens[:-1] if finished else tokens, skip_special_tokens=True).strip()
                batch.append(Sample(prompt_index=i, text=text, token_ids=tokens, logprobs=logprobs,
                                    finished=finished, sampling_logprobs=None))
        done.append((b, batch))
    out: list[list[Sample]] = [[] for _ in ids]
    for batch in distributed.gather_batches(done):
        for sample in batch:
            out[sample.prompt_index].append(sample)
    return out
