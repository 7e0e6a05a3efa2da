"""Memory per GPU of each stage, estimated before any weight is loaded (``align run --dry-run``).

The model is built on the meta device from its ``config.json`` (exact parameter counts, LoRA's
included, no memory), and each stage adds up, per process:

- **weights** of every model it holds (the policy; PPO also the reference, the critic and both
  reward models), in the configured dtype;
- for what it trains: **gradients** (the trainable weights' dtype) and **AdamW's two moments**
  (the same dtype as the weights, as torch keeps them);
- **activations** saved for the backward pass of one micro-batch of ``batch_size / processes``
  sequences of ``max_seq_len`` tokens: per decoder layer ``(ACT_HIDDEN * h + ACT_MLP * i)``
  values per token (the norms' inputs, q, k, v, the attention output, the MLP's gate, up and
  product; fused attention keeps no ``s x s`` scores) and the loss's ``(tokens, vocab)`` logits;
- the **KV cache** of a sampling batch (prompts x K x (prompt + new tokens)).

Sharding follows the accelerate config: DDP replicates everything; ZeRO-2 shards gradients and
optimiser states; ZeRO-3 and FSDP shard weights too (frozen models are not sharded: align holds
them whole). The estimate is the sum of what the stage holds at its peak, the way DeepSpeed's and
accelerate's estimators count; a test checks it against the memory a small model takes to train on
a CPU (within 25%).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.errors import AlignError

ACT_HIDDEN = 20  # values per token and layer, in units of the hidden size, kept for the backward pass (measured)
ACT_MLP = 3  # ... in units of the MLP width (measured: see docs/scale.md)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2**30


@dataclass(frozen=True)
class Sharding:
    """How the accelerate config spreads a trained model over the processes."""

    processes: int = 1
    kind: str = "none"  # none | ddp | zero2 | zero3 | fsdp

    @property
    def weights(self) -> int:
        return self.processes if self.kind in ("zero3", "fsdp") else 1

    @property
    def states(self) -> int:  # gradients and optimiser states
        return self.processes if self.kind in ("zero2", "zero3", "fsdp") else 1

    def describe(self) -> str:
        return "one process" if self.processes == 1 else f"{self.processes} processes, {self.kind}"


def sharding_from_accelerate(path: Path | None) -> Sharding:
    """The sharding an accelerate config file chooses (None: accelerate's default config if there is one,
    else one process)."""
    if path is None:
        from accelerate.commands.config.config_args import default_yaml_config_file

        path = Path(default_yaml_config_file)
        if not path.is_file():
            return Sharding()
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise AlignError(f"{path}: cannot read the accelerate config ({e})") from None
    if not isinstance(cfg, dict):
        raise AlignError(f"{path}: an accelerate config is a YAML mapping")
    processes = int(cfg.get("num_processes") or 1)
    kind = {"MULTI_GPU": "ddp", "MULTI_CPU": "ddp", "FSDP": "fsdp", "DEEPSPEED": "zero"}.get(
        str(cfg.get("distributed_type", "NO")), "none")
    if kind == "zero":
        stage = int((cfg.get("deepspeed_config") or {}).get("zero_stage", 2))
        kind = "zero3" if stage == 3 else "zero2" if stage == 2 else "ddp"
    return Sharding(processes, kind if processes > 1 else "none")


@dataclass(frozen=True)
class Architecture:
    """What the estimate reads of a model: exact parameter counts and the shapes activations scale with."""

    name: str
    params: int
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    kv_width: int  # key (or value) width per token and layer: kv heads x head dim
    linear_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # module suffix -> (in, out), per layer

    def lora_params(self, r: int, targets: list[str]) -> int:
        """Trainable parameters of a LoRA adapter of rank ``r`` on the ``targets`` of every layer."""
        return self.layers * sum(r * (i + o) for name, (i, o) in self.linear_shapes.items() if name in targets)


def architecture(config: Any, name: str) -> Architecture:
    """A transformers config's architecture, the model built on the meta device (no memory, no weights)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModel, AutoModelForCausalLM

    with init_empty_weights(), _quiet_transformers():
        try:
            model = AutoModelForCausalLM.from_config(config)
        except ValueError:  # an encoder (a reward model's backbone): no causal LM head
            model = AutoModel.from_config(config)
    shapes: dict[str, tuple[int, int]] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers.0." in f".{module_name}.":
            shapes[module_name.rsplit(".", 1)[-1]] = (module.in_features, module.out_features)
    hidden = _get(config, "hidden_size", "n_embd", "d_model")
    heads = _get(config, "num_attention_heads", "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return Architecture(name=name, params=sum(p.numel() for p in model.parameters()), hidden=hidden,
                        layers=_get(config, "num_hidden_layers", "n_layer"),
                        intermediate=getattr(config, "intermediate_size", None) or 4 * hidden,
                        vocab=config.vocab_size, kv_width=kv_heads * head_dim, linear_shapes=shapes)


def _get(config: Any, *names: str) -> int:
    for n in names:
        if getattr(config, n, None):
            return int(getattr(config, n))
    raise AlignError(f"model config {type(config).__name__}: none of {names} (cannot estimate its memory)")


class _quiet_transformers:
    def __enter__(self) -> None:
        from transformers.utils import logging

        self.level = logging.get_verbosity()
        logging.set_verbosity_error()

    def __exit__(self, *exc: Any) -> None:
        from transformers.utils import logging

        logging.set_verbosity(self.level)


def policy_architecture(cfg: Any) -> Architecture:
    """The campaign's policy: ``model.path``'s config.json, or the sandbox's tiny Llama from its fields."""
    from transformers import AutoConfig, LlamaConfig

    m = cfg.model
    if m.path:
        path = Path(m.path)
        if (path / "config.json").is_file():
            config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=m.trust_remote_code)
            return architecture(config, path.name)
        if not m.architecture:
            raise AlignError(f"{path / 'config.json'}: model.path: no config.json to size the model by (or set "
                             "model.architecture to a copy of it)")
        shape = Path(m.architecture)
        if not shape.is_file():
            raise AlignError(f"{shape}: model.architecture: not found")
        return architecture(AutoConfig.from_pretrained(shape, local_files_only=True), shape.parent.name)
    vocab = cfg.sandbox.tokenizer_vocab_size if cfg.sandbox is not None else 1024
    config = LlamaConfig(vocab_size=vocab, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                         num_attention_heads=m.num_heads, num_key_value_heads=m.num_heads,
                         intermediate_size=m.intermediate_size, max_position_embeddings=m.max_position_embeddings,
                         tie_word_embeddings=True)
    return architecture(config, "sandbox tiny Llama")


@dataclass
class Estimate:
    """Bytes per process: what the stage holds throughout (``held``: weights) and what each of its phases
    adds on top (``phases``: sampling's KV cache, training's gradients, optimiser states and activations);
    the peak is the held memory plus the largest phase."""

    held: dict[str, float] = field(default_factory=dict)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    def hold(self, part: str, value: float) -> None:
        self.held[part] = self.held.get(part, 0.0) + value

    def add(self, phase: str, part: str, value: float) -> None:
        parts = self.phases.setdefault(phase, {})
        parts[part] = parts.get(part, 0.0) + value

    @property
    def peak_phase(self) -> str | None:
        return max(self.phases, key=lambda p: sum(self.phases[p].values())) if self.phases else None

    @property
    def total(self) -> float:
        phase = self.peak_phase
        return sum(self.held.values()) + (sum(self.phases[phase].values()) if phase else 0.0)

    def line(self) -> str:
        phase = self.peak_phase
        parts = {**self.held, **(self.phases[phase] if phase else {})}
        shown = ", ".join(f"{k} {_size(v)}" for k, v in parts.items() if v >= 0.005 * self.total)
        return f"{_size(self.total)}" + (f" at peak ({phase})" if phase else "") + f": {shown}"


def _size(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= 0.1 * GIB else f"{n / 2**20:.0f} MiB"


def activation_bytes(arch: Architecture, *, sequences: int, seq_len: int, dtype: str, logits: bool = True,
                     checkpointing: bool = False) -> float:
    """What one micro-batch's forward keeps for the backward pass (and the loss's logits); with activation
    checkpointing, each layer's input and one layer's activations at a time."""
    tokens = sequences * seq_len
    b = BYTES[dtype]
    layer = ACT_HIDDEN * arch.hidden + ACT_MLP * arch.intermediate
    kept = arch.layers * arch.hidden + layer if checkpointing else arch.layers * layer
    out = tokens * (kept + 2 * arch.hidden) * b
    if logits:  # the (tokens, vocab) logits, and the float32 log-softmax and its gradient the cross-entropy keeps
        out += tokens * arch.vocab * (b + 8)
    return out


def train(est: Estimate, arch: Architecture, *, name: str, dtype: str, trainable: int, sequences: int, seq_len: int,
          sharding: Sharding, logits: bool = True, checkpointing: bool = False) -> None:
    """A model being trained: its weights and AdamW's two moments (held from the first step on), and in its
    update phase the gradients and one micro-batch's activations (``sequences`` is the global micro-batch,
    split over the processes)."""
    b = BYTES[dtype]
    phase = f"{name} update"
    est.hold(f"{name} weights", arch.params * b / sharding.weights)
    est.hold(f"{name} optimizer", 2 * trainable * b / sharding.states)
    est.add(phase, f"{name} gradients", trainable * b / sharding.states)
    per_process = max(1, -(-sequences // sharding.processes))
    est.add(phase, "activations", activation_bytes(arch, sequences=per_process, seq_len=seq_len, dtype=dtype,
                                                   logits=logits, checkpointing=checkpointing))


def frozen(est: Estimate, arch: Architecture, *, name: str, dtype: str) -> None:
    """A model only read (reference, reward models): its weights, whole on every process."""
    est.hold(f"{name} weights", arch.params * BYTES[dtype])


def sample(est: Estimate, arch: Architecture, *, sequences: int, length: int, dtype: str) -> None:
    """The sampler's KV cache: keys and values of every layer for one batch of ``sequences`` (each process
    samples whole batches of its own)."""
    est.add("sampling", "KV cache", 2 * arch.layers * arch.kv_width * sequences * length * BYTES[dtype])


# --------------------------------------------------------------------------------- stages ---
def _trainable(arch: Architecture, lora: Any) -> int:
    return arch.lora_params(lora.r, list(lora.target_modules)) if lora is not None and lora.enabled else arch.params


def _reward_architecture(cfg: Any, axis: str, policy: Architecture) -> Architecture:
    init = getattr(cfg.reward, axis).init
    if init == "sft":
        return policy
    from transformers import AutoConfig

    path = Path(init)
    if not (path / "config.json").is_file():
        raise AlignError(f"{path / 'config.json'}: reward.{axis}.init: no config.json to read the architecture from")
    return architecture(AutoConfig.from_pretrained(path, local_files_only=True), path.name)


def stage_estimate(cfg: Any, kind: str, name: str | None, sharding: Sharding,
                   cache: dict[str, Architecture] | None = None) -> tuple[Estimate, str] | None:
    """A stage's memory per process, and what it assumed (None: a stage that holds no model)."""
    cache = {} if cache is None else cache
    if "policy" not in cache:
        cache["policy"] = policy_architecture(cfg)
    policy, dtype = cache["policy"], cfg.model.dtype
    est = Estimate()
    prompt = cfg.sft.max_seq_len if cfg.model.path else min(cfg.sft.max_seq_len, cfg.model.max_position_embeddings)

    def rm(axis: str) -> Architecture:
        if axis not in cache:
            cache[axis] = _reward_architecture(cfg, axis, policy)
        return cache[axis]

    if kind == "sft":
        s = cfg.sft
        train(est, policy, name="policy", dtype=dtype, trainable=_trainable(policy, s.lora), sequences=s.batch_size,
              seq_len=s.max_seq_len, sharding=sharding, checkpointing=s.activation_checkpointing)
        return est, f"micro-batch {s.batch_size} x {s.max_seq_len} tokens"
    if kind == "rm":
        r = getattr(cfg.reward, name)
        train(est, rm(name), name=f"{name} RM", dtype=dtype, trainable=rm(name).params, sequences=2 * r.batch_size,
              seq_len=r.max_seq_len, sharding=sharding, logits=r.lm_coef > 0, checkpointing=r.activation_checkpointing)
        return est, f"micro-batch {r.batch_size} pairs (2 x {r.batch_size} sequences) x {r.max_seq_len} tokens"
    if kind in ("rs", "prefs", "eval"):
        c = getattr(cfg, kind)
        k = getattr(c, "k", None) or getattr(c, "samples_per_prompt", 1)
        batch = getattr(c, "sample_batch_size", None)
        sequences = batch * k if batch else getattr(c, "batch_size", 64)
        length = (getattr(c, "max_prompt_tokens", None) or prompt) + c.max_new_tokens
        if kind == "rs":
            t = c.train
            train(est, policy, name="policy", dtype=dtype, trainable=policy.params,  # RS tunes every weight
                  sequences=t.batch_size, seq_len=t.max_seq_len, sharding=sharding,
                  checkpointing=t.activation_checkpointing)
            for axis in ("helpfulness", "safety"):
                frozen(est, rm(axis), name=f"{axis} RM", dtype=dtype)
            if c.kl_coef > 0:
                frozen(est, policy, name="SFT reference", dtype=dtype)
        else:
            frozen(est, policy, name="policy", dtype=dtype)
        sample(est, policy, sequences=sequences, length=length, dtype=dtype)
        return est, f"sampling {sequences} sequences x {length} tokens"
    if kind == "ppo":
        p = cfg.ppo
        length = prompt + p.max_new_tokens
        micro = p.micro_batch_size or p.minibatch_size
        ckpt = p.activation_checkpointing
        train(est, policy, name="policy", dtype=dtype, trainable=_trainable(policy, p.lora), sequences=micro,
              seq_len=length, sharding=sharding, checkpointing=ckpt)
        critic = policy if p.critic_init == "policy" else rm(p.critic_init)
        train(est, critic, name="critic", dtype=dtype, trainable=critic.params, sequences=micro, seq_len=length,
              sharding=sharding, logits=False, checkpointing=ckpt)
        if p.algorithm == "ppo_lagrangian":
            train(est, rm("safety"), name="cost critic", dtype=dtype, trainable=rm("safety").params, sequences=micro,
                  seq_len=length, sharding=sharding, logits=False, checkpointing=ckpt)
        if not p.lora.enabled:  # a LoRA policy's reference is its own base weights
            frozen(est, policy, name="reference", dtype=dtype)
        for axis in ("helpfulness", "safety"):
            frozen(est, rm(axis), name=f"{axis} RM", dtype=dtype)
        sample(est, policy, sequences=p.sample_batch_size * p.group_size, length=length, dtype=dtype)
        return est, f"micro-batch {micro} x {length} tokens, sampling {p.sample_batch_size * p.group_size} sequences"
    return None

