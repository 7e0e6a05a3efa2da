"""How a reward model reads a (prompt, answer) sequence into one number: its head.

- ``last`` (Llama 2, InstructGPT): ``r(x, y) = w . h_T``, the classifier's scalar head on the final
  hidden state of the last token.
- ``loglik``: the same plus the backbone's own language-model head read over the answer,

      r(x, y) = w . h_T + c * (1 / |y|) * sum_t log p(y_t | x, y_<t)

  the length-normalised log-likelihood that SimPO (Meng et al. 2024) uses as an implicit reward, with a
  learned weight ``c`` (initialised to ``loglik_coef``). A reward model initialised from the policy knows,
  token by token, where an answer goes wrong (a digit off, a word that is not in the prompt): its
  next-token distribution says so. A scalar read at the last token has to learn to gather that from
  the whole answer, and a small one trained on a few thousand pairs does not (docs/reward.md, issue 28:
  verification 0.24 with five candidates, chance 0.2, where the policy's own likelihood reaches an AUC
  of 0.94). Both terms train on the ranking loss; the language-model head is the input embeddings when
  they are tied (the sandbox policy), else the checkpoint's ``lm_head.weight``, trained alongside and
  saved with the head.

A model carries its head as ``model.align_reward_head`` (not a submodule: the saved classifier stays a
plain Hugging Face checkpoint) and names it in its config (so ``config.json`` says which head to load);
``save_head`` writes it to ``reward_head.safetensors`` beside the weights, and ``load_head`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from align.errors import AlignError
from align.reward.lm_reg import read_lm_head

if TYPE_CHECKING:
    from transformers import PreTrainedModel

HEADS = ("last", "loglik")
HEAD_FILE = "reward_head.safetensors"
CONFIG_KEY = "align_reward_head"  # in config.json: "loglik" where the head is more than the scalar


@dataclass
class LoglikHead:
    """The learned weight ``c`` of the answer's mean log-likelihood, and the LM head that reads it."""

    coef: torch.nn.Parameter
    lm_weight: torch.Tensor  # (V, H): the input embeddings when tied, else its own parameter
    tied: bool

    @property
    def new_params(self) -> list[torch.nn.Parameter]:
        """What training adds to the backbone's parameters."""
        return [self.coef] + ([] if self.tied else [self.lm_weight])


def _plain(model: torch.nn.Module) -> PreTrainedModel:
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


def head_of(model: torch.nn.Module) -> LoglikHead | None:
    return getattr(_plain(model), "align_reward_head", None)


def attach_head(model: PreTrainedModel, kind: str, *, coef: float, init_dir: Path | None,
                lm_weight: torch.Tensor | None = None) -> LoglikHead | None:
    """Give ``model`` the head ``kind`` ("last": nothing to add). ``lm_weight`` (an untied LM head already read)
    or ``init_dir`` (the checkpoint whose safetensors hold ``lm_head.weight``) supply an untied LM head."""
    if kind not in HEADS:
        raise AlignError(f"reward head {kind!r}: expected one of {', '.join(HEADS)}")
    if kind == "last":
        return None
    plain = _plain(model)
    if not hasattr(plain, "score"):
        raise AlignError(f"head: loglik needs a causal LM reward model; {type(plain).__name__} has no scalar "
                         "'score' head over a decoder (an encoder such as MiniLM has no next-token head)")
    device = next(plain.parameters()).device
    tied = bool(plain.config.get_text_config().tie_word_embeddings) and lm_weight is None
    if tied:
        weight = plain.get_input_embeddings().weight
    else:
        if lm_weight is None:
            if init_dir is None:
                raise AlignError("head: loglik on an untied model needs the checkpoint's lm_head.weight")
            lm_weight = read_lm_head(init_dir, why="head: loglik")
        weight = torch.nn.Parameter(lm_weight.to(plain.dtype).to(device))
    head = LoglikHead(torch.nn.Parameter(torch.tensor(float(coef), device=device)), weight, tied)
    plain.align_reward_head = head  # a plain attribute: not in the state dict
    # named in the config, so save_pretrained writes config.json once with it (under a multi-process launch the
    # other processes' folders hard-link the main one's files: a rewrite after saving would go through the links)
    plain.config.update({CONFIG_KEY: kind})
    return head


def mean_answer_logprob(hidden: torch.Tensor, input_ids: torch.Tensor, answers: torch.Tensor,
                        lm_weight: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mean over each row's answer tokens (``answers`` true) of ``log p(y_t | y_<t)`` from the final
    hidden states ``(N, T, H)``: position t predicts token t + 1, so the answer's first token is read off the
    prompt's last position. Vocabulary-sized logits only at answer positions."""
    predicts = answers[:, 1:]
    logits = hidden[:, :-1][predicts].float() @ lm_weight.float().T  # (M, V)
    token_lp = torch.log_softmax(logits, -1).gather(1, input_ids[:, 1:][predicts][:, None])[:, 0]
    rows = torch.arange(len(input_ids), device=input_ids.device)[:, None].expand_as(predicts)[predicts]
    total = torch.zeros(len(input_ids), device=hidden.device).index_add(0, rows, token_lp)
    return total / predicts.sum(1).clamp(min=1)


def sequence_rewards(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     answers: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)`` float rewards of right-padded sequences under the model's head; ``answers`` ``(N, T)`` marks the
    answer tokens (the ``loglik`` head needs them)."""
    head = head_of(model)
    if head is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    if answers is None:
        raise ValueError("the loglik reward head needs the answer-token mask")
    # through the wrapper (DDP syncs its gradients, peft its adapters), the backbone's output caught on the way
    plain = _plain(model)
    caught: list[torch.Tensor] = []
    handle = plain.get_submodule(plain.base_model_prefix).register_forward_hook(
        lambda _m, _args, out: caught.append(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]))
    try:
        scalar = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    finally:
        handle.remove()
    return scalar + head.coef * mean_answer_logprob(caught[-1], input_ids, answers, head.lm_weight)


def save_head(model: torch.nn.Module, model_dir: Path) -> None:
    """Write the head beside a saved reward model (nothing for ``last``), whose config.json names it."""
    head = head_of(model)
    if head is None:
        return
    tensors = {"coef": head.coef.detach().float().cpu()}
    if not head.tied:
        tensors["lm_head.weight"] = head.lm_weight.detach().cpu().contiguous()
    save_file(tensors, str(Path(model_dir) / HEAD_FILE))


def load_head(model: PreTrainedModel, model_dir: Path) -> None:
    """Re-attach the head a saved reward model names in its config.json (nothing for a plain classifier)."""
    if getattr(model.config, CONFIG_KEY, "last") == "last":
        return
    file = Path(model_dir) / HEAD_FILE
    if not file.is_file():
        raise AlignError(f"{model_dir}: config.json names the {getattr(model.config, CONFIG_KEY)!r} reward head "
                         f"and {HEAD_FILE} is missing")
    tensors = load_file(str(file))
    attach_head(model, "loglik", coef=float(tensors["coef"]), init_dir=None, lm_weight=tensors.get("lm_head.weight"))
