"""Language-modelling regularisation of a reward model (GRM: Yang et al. 2024, "Regularizing
Hidden States Enables Learning Generalizable Reward Model").

A reward model initialised from the policy starts with what the policy knows (the SFT model,
read as a verifier, prefers right answers to wrong ones), and the ranking loss alone is free to
overwrite it. GRM keeps the policy's language-modelling head on the backbone's final hidden
states during training and adds the SFT loss on the chosen answers:

    L = L_rank + lm_coef * CE(lm_head(h), chosen answer tokens)

The head is used in training only: the saved reward model is a plain sequence classifier.
With tied embeddings (the sandbox policy) the head is the backbone's own embedding matrix;
otherwise ``lm_head.weight`` is read from the initial checkpoint's safetensors and trained
alongside.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors import safe_open

from align.errors import AlignError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LM_HEAD_KEY = "lm_head.weight"


def read_lm_head(init_dir: Path, *, why: str = "lm_coef > 0") -> torch.Tensor:
    """An untied causal LM's ``lm_head.weight`` from its checkpoint's safetensors."""
    for file in sorted(Path(init_dir).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            if LM_HEAD_KEY in f.keys():
                return f.get_tensor(LM_HEAD_KEY)
    raise AlignError(f"{init_dir}: {why} needs the causal LM's '{LM_HEAD_KEY}' in the checkpoint's "
                     "safetensors (an encoder such as MiniLM has no LM head)")


class LMRegularizer:
    """Captures the backbone's final hidden states of each forward and gives the LM loss on the
    answer tokens of the first ``n`` sequences (the chosen responses)."""

    def __init__(self, model: PreTrainedModel, init_dir: Path):
        base = model.get_submodule(model.base_model_prefix)
        if model.config.get_text_config().tie_word_embeddings:
            self.weight = model.get_input_embeddings().weight
            self.new_params: list[torch.nn.Parameter] = []
        else:
            head = read_lm_head(init_dir)
            self.weight = torch.nn.Parameter(head.to(model.dtype).to(next(model.parameters()).device))
            self.new_params = [self.weight]
        if self.weight.shape[0] < model.get_input_embeddings().weight.shape[0]:
            raise AlignError(f"{init_dir}: the LM head has {self.weight.shape[0]} rows for a vocabulary of "
                             f"{model.get_input_embeddings().weight.shape[0]}")
        self._hidden: list[torch.Tensor] = []  # the backbone's outputs since the last ``clear``
        self._handle = base.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self._hidden.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    def clear(self) -> None:
        """Forget the captured hidden states (before each micro-batch's forwards)."""
        self._hidden = []

    def _cross_entropy(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(hidden.float() @ self.weight.float().T, targets)

    def loss(self, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens (``answer_mask`` true) of the first
        ``len(answer_mask)`` sequences of the last forward pass."""
        if not self._hidden:
            raise RuntimeError("LMRegularizer.loss called before a forward pass")
        n = answer_mask.shape[0]
        predicts = answer_mask[:, 1:]  # position t predicts token t + 1: only answer tokens are scored
        hidden = self._hidden[-1][:n, :-1][predicts]  # (N, H): no vocabulary-sized logits for prompt or padding
        return self._cross_entropy(hidden, input_ids[:n, 1:][predicts])

    def shared_loss(self, suffix_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
        """The same loss after a shared-prefix forward (``collate_shared_prefix``): the last two forwards
        read the ``(B, P)`` prefixes, then the ``(2B, S)`` interleaved suffixes; the chosen answers
        (``answer_mask``, ``(B, S)``) lie in the even suffixes, their first token predicted by the prefix's
        last position."""
        if len(self._hidden) < 2:
            raise RuntimeError("LMRegularizer.shared_loss needs a prefix and a suffix forward pass")
        prefix, suffix = self._hidden[-2], self._hidden[-1]
        chosen = torch.cat([prefix[:, -1:], suffix[0::2, :-1]], 1)  # position j predicts suffix token j
        return self._cross_entropy(chosen[answer_mask], suffix_ids[0::2][answer_mask])

    def remove(self) -> None:
        self._handle.remove()
        self._hidden = []
