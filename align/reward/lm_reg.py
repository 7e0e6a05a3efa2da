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


def _read_lm_head(init_dir: Path) -> torch.Tensor:
    for file in sorted(Path(init_dir).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            if LM_HEAD_KEY in f.keys():
                return f.get_tensor(LM_HEAD_KEY)
    raise AlignError(f"{init_dir}: lm_coef > 0 needs the causal LM's '{LM_HEAD_KEY}' in the checkpoint's "
                     "safetensors (an encoder such as MiniLM has no LM head: set lm_coef: 0)")


class LMRegularizer:
    """Captures the backbone's final hidden states of each forward and gives the LM loss on the
    answer tokens of the first ``n`` sequences (the chosen responses)."""

    def __init__(self, model: PreTrainedModel, init_dir: Path):
        base = model.get_submodule(model.base_model_prefix)
        if model.config.get_text_config().tie_word_embeddings:
            self.weight = model.get_input_embeddings().weight
            self.new_params: list[torch.nn.Parameter] = []
        else:
            head = _read_lm_head(init_dir)
            self.weight = torch.nn.Parameter(head.to(model.dtype).to(next(model.parameters()).device))
            self.new_params = [self.weight]
        if self.weight.shape[0] < model.get_input_embeddings().weight.shape[0]:
            raise AlignError(f"{init_dir}: the LM head has {self.weight.shape[0]} rows for a vocabulary of "
                             f"{model.get_input_embeddings().weight.shape[0]}")
        self._hidden: torch.Tensor | None = None
        self._handle = base.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self._hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def loss(self, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens (``answer_mask`` true) of the first
        ``len(answer_mask)`` sequences of the last forward pass."""
        if self._hidden is None:
            raise RuntimeError("LMRegularizer.loss called before a forward pass")
        n = answer_mask.shape[0]
        predicts = answer_mask[:, 1:]  # position t predicts token t + 1: only answer tokens are scored
        hidden = self._hidden[:n, :-1][predicts]  # (N, H): no vocabulary-sized logits for prompt or padding
        return F.cross_entropy(hidden.float() @ self.weight.float().T, input_ids[:n, 1:][predicts])

    def remove(self) -> None:
        self._handle.remove()
        self._hidden = None
