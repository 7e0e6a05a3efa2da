"""Builders for policies and tokenizers: the sandbox's tiny Llama or any local HF checkpoint.

Weights load through safetensors only (no pickle); ``trust_remote_code`` stays off unless the
config turns it on; nothing is fetched from a hub (``local_files_only``).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from align import distributed
from align.config import LoraSettings, ModelConfig
from align.errors import AlignError

if TYPE_CHECKING:  # transformers' models and peft load where they are used: a config loads without them
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Used when a checkpoint's tokenizer has no chat template of its own.
PLAIN_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}### Assistant:\n{% generation %}{{ message['content'] }}"
    "{{ eos_token }}{% endgeneration %}\n\n"
    "{% else %}### {{ message['role'] | capitalize }}:\n{{ message['content'] }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A local tokenizer with a pad token and a chat template (a plain one if it has none)."""
    path = Path(path)
    if not path.is_dir():
        raise AlignError(f"{path}: tokenizer folder not found")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = PLAIN_CHAT_TEMPLATE
    return tok


def require_safetensors(path: Path) -> None:
    if not path.is_dir():
        raise AlignError(f"{path}: model folder not found")
    if not any(path.glob("*.safetensors")):
        raise AlignError(f"{path}: no *.safetensors weights (align loads safetensors only, never pickle)")


def load_causal_lm(path: str | Path, cfg: ModelConfig | None = None) -> PreTrainedModel:
    """A local causal LM from safetensors weights."""
    cfg = cfg or ModelConfig()
    path = Path(path)
    require_safetensors(path)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, trust_remote_code=cfg.trust_remote_code,
        dtype=DTYPES[cfg.dtype])


def with_lora(model: PreTrainedModel, lora: LoraSettings) -> PeftModel:
    """Wrap ``model`` with a LoRA adapter on ``lora.target_modules``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():
            # peft 0.21's PeftModel.__init__ reads model.is_gradient_checkpointing, which transformers 5 deprecates
            # in favour of is_activation_checkpointing (peft/peft_model.py:184): peft's to fix, not the user's
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as e:
        raise AlignError(f"lora.target_modules {lora.target_modules}: {e}") from None


def build_policy(cfg: ModelConfig, *, tokenizer_dir: Path | None, seed: int) -> tuple[PreTrainedModel,
                                                                                    PreTrainedTokenizerBase]:
    """The policy to fine-tune and its tokenizer: the local checkpoint ``cfg.path``, or (``path: null``)
    the sandbox's tiny Llama, created from scratch with the world's tokenizer and seeded with ``seed``."""
    if cfg.path:
        return load_causal_lm(cfg.path, cfg), load_tokenizer(cfg.path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer_dir is None:
        raise AlignError("model.path is null (the sandbox's tiny Llama) but there is no sandbox world to take "
                         "its tokenizer from")
    from align.sandbox.model import tiny_llama

    tokenizer = load_tokenizer(tokenizer_dir)
    model = tiny_llama(tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                       intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
                       seed=seed)
    return model, tokenizer


def save_model(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, model_dir: Path, *,
               adapter_dir: Path, merge: bool = True) -> None:
    """Save as safetensors: a LoRA model saves its adapter in ``adapter_dir`` and, with ``merge``, the
    merged weights in ``model_dir``; a plain model saves to ``model_dir``.

    Under a multi-process launch the main process saves (transformers writes on rank 0 only) and every
    other process gets the same files in its own (scratch) folders, to read back as the main one does."""
    if not distributed.launched():
        _save(model, tokenizer, model_dir, adapter_dir=adapter_dir, merge=merge)
        return
    full = full_state(model)  # a model sharded by FSDP: its whole weights, gathered by every process
    if distributed.is_main():
        _save(model, tokenizer, model_dir, adapter_dir=adapter_dir, merge=merge, state_dict=full)
    distributed.barrier()
    saved = distributed.from_main((str(model_dir), str(adapter_dir)))
    if not distributed.is_main():
        for source, target in dict(zip(saved, (model_dir, adapter_dir))).items():  # once when the two are one
            _mirror(Path(source), target)
    distributed.barrier()  # every copy made before the main process goes on (and may commit the round)


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole state dict of a model whose weights FSDP (version 2) sharded as DTensors or DeepSpeed ZeRO-3
    partitioned, gathered (a collective: every process calls it, in the same order); None for a model held
    whole."""
    from torch.distributed.tensor import DTensor

    partitioned = [p for p in model.parameters() if zero3_partitioned(p)]
    if partitioned:  # DeepSpeed's documented gather (not run here: no GPU, no DeepSpeed on this machine)
        import deepspeed

        with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
            return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    state = model.state_dict()
    if not any(isinstance(v, DTensor) for v in state.values()):
        return None
    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}


def sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP (version 2) shards the model's weights (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def zero3_partitioned(param: torch.nn.Parameter) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions the parameter (it marks them with ``ds_id``)."""
    return hasattr(param, "ds_id")


def merged_lora_state(model: PeftModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base model's weights with a LoRA adapter merged in, from the PEFT model's (gathered) state dict:
    ``W + scaling * B @ A`` for every adapted linear layer, named as the base model names its weights (what
    ``merge_and_unload().state_dict()`` gives, without an unsharded copy of the model)."""
    config = model.peft_config[model.active_adapter]
    if getattr(config, "fan_in_fan_out", False) or not hasattr(config, "lora_alpha"):
        raise AlignError("merging this adapter from sharded weights is not supported (a LoRA on linear layers is)")
    scaling = config.lora_alpha / (config.r ** 0.5 if config.use_rslora else config.r)
    name = model.active_adapter
    merged = {}
    for key, value in state.items():
        if "lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            stem = key[: -len(".base_layer.weight")]
            a, b = state.get(f"{stem}.lora_A.{name}.weight"), state.get(f"{stem}.lora_B.{name}.weight")
            if a is not None and b is not None:
                value = value + (scaling * (b.float() @ a.float())).to(value.dtype)
        merged[key.removeprefix("base_model.model.").replace(".base_layer", "")] = value
    return merged


def _save(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, model_dir: Path, *,
          adapter_dir: Path, merge: bool, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """``state_dict``: the whole weights gathered from shards (None: the model's own)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.save_pretrained(adapter_dir, state_dict=state_dict)  # peft keeps the adapter's part
        tokenizer.save_pretrained(adapter_dir)
        if not merge:
            return
        if state_dict is None:
            model = model.merge_and_unload()
        else:
            state_dict, model = merged_lora_state(model, state_dict), model.get_base_model()
    model.save_pretrained(model_dir, state_dict=state_dict)
    tokenizer.save_pretrained(model_dir)


def _mirror(source: Path, target: Path) -> None:
    """``target`` made a copy of folder ``source`` (hard links where the filesystem allows)."""
    if not source.is_dir():
        return
    for f in source.rglob("*"):
        if f.is_file():
            dest = target / f.relative_to(source)
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dest)
            except OSError:
                shutil.copy2(f, dest)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off: PPO's ratio must compare the same function before and after (Huang et al. 2024); a reward
    model trains without it too (TRL's and OpenRLHF's default), and its attention takes the fused kernel."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    config = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "hidden_dropout_prob", "attention_probs_dropout_prob",
                "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)

