"""A stand-in for the parts of vLLM's offline API that ``align.vllm_backend`` uses (``LLM``, ``SamplingParams``,
request outputs with per-token raw log-probabilities, ``load_weights``, ``reset_prefix_cache``), running a
Hugging Face model on the CPU: the adapter's translation is tested without a GPU. Not vLLM."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

CALLS: dict[str, int] = {"load_weights": 0, "reset_prefix_cache": 0, "engines": 0}


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    logprobs: int | None = None
    stop_token_ids: list[int] | None = None


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]]
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class _Model:
    """vLLM's model object: ``load_weights`` takes (name, tensor) pairs named as the Hugging Face checkpoint."""

    def __init__(self, hf):
        self.hf = hf

    def load_weights(self, weights):
        CALLS["load_weights"] += 1
        state = dict(weights)
        missing = set(self.hf.state_dict()) - set(state)
        if missing:
            raise KeyError(f"weights missing: {sorted(missing)[:3]}")
        self.hf.load_state_dict(state)


class LLM:
    def __init__(self, model: str, **kwargs):
        from transformers import AutoModelForCausalLM

        CALLS["engines"] += 1
        self.kwargs = kwargs
        hf = AutoModelForCausalLM.from_pretrained(model).eval()
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=_Model(hf)))))

    @property
    def _model(self):
        return self.llm_engine.model_executor.driver_worker.model_runner.model.hf

    def reset_prefix_cache(self):
        CALLS["reset_prefix_cache"] += 1

    @torch.no_grad()
    def generate(self, prompts, sampling_params: SamplingParams, use_tqdm: bool = True):
        p = sampling_params
        g = torch.Generator().manual_seed(p.seed or 0)
        out = []
        for prompt in prompts:
            request = RequestOutput(list(prompt["prompt_token_ids"]))
            for j in range(p.n):
                ids, tokens, logprobs, reason = list(prompt["prompt_token_ids"]), [], [], "length"
                for _ in range(p.max_tokens):
                    logits = self._model(input_ids=torch.tensor([ids])).logits[0, -1].float()
                    raw = logits.log_softmax(-1)
                    token = int(torch.multinomial((logits / p.temperature).softmax(-1), 1, generator=g))
                    tokens.append(token)
                    logprobs.append({token: Logprob(float(raw[token]))})
                    ids.append(token)
                    if p.stop_token_ids and token in p.stop_token_ids:
                        reason = "stop"
                        break
                request.outputs.append(CompletionOutput(j, tokens, logprobs, reason))
            out.append(request)
        return out
