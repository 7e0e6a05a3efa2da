"""Campaign config: the schema's core, the section registry, and loading from YAML.

A campaign config is one pydantic model: a core (the campaign's name and seed, its ordered
stages, the policy model, tracking) plus one section per owner. Each stage module declares its
own section (``sft:``, ``reward:``, ``rs:``, ``prefs:``) and the shared packages declare theirs
(``sandbox:``, ``eval:``, ``combine:``, ``ablation:``) with ``register_section``, so a new stage
brings its knobs in its own file. Every field has one default and one description, here or in its
owner's module (TRL-style: the paper's value quoted where it has one).

Loading resolves ``extends:`` (a base file, deep-merged under this one), applies ``--set
key.path=value`` overrides, validates, and checks the stage order against the stage registry.
Every problem is an ``AlignError`` naming the file, the line and the dotted key (exit code 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from align.errors import AlignError, error_message, validation_message
from align.stages import PlanError, get_stage, plan_rounds, stage_kinds, stage_sections


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def folder_name(v: str) -> str:
    """Validator of names that become folders: no path separators, not empty, no leading dot."""
    if not v or "/" in v or "\\" in v or v in (".", "..") or "\0" in v or v.startswith("."):
        raise ValueError(f"{v!r} is not a valid name: no path separators, not empty, no leading dot")
    return v


# --------------------------------------------------------------------------- shared knobs ---
class TrainingConfig(Strict):
    """The knobs every training stage shares (the one training loop, ``align.training``): AdamW with a
    linear warm-up and a cosine decay, Llama 2's schedule. Stages override the defaults they differ on."""

    epochs: float = Field(1.0, gt=0, description="passes over the training set")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (overrides epochs)")
    batch_size: int = Field(32, ge=1, description="examples per micro-batch, all processes together (under "
                                                  "accelerate launch each takes batch_size / processes of them)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimiser step: the effective "
                                                                  "batch is batch_size x this")
    lr: float = Field(1e-5, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (Llama 2: 0.1)")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="linear warm-up over this share of the steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine decays to this fraction of lr "
                                                             "(Llama 2: 10%)")
    grad_clip: float = Field(1.0, gt=0, description="clip the global gradient norm to this (Llama 2: 1.0)")
    max_seq_len: int = Field(128, ge=8, description="tokens per sequence; longer ones are cut")
    log_every: int = Field(20, ge=1, description="write step metrics every this many optimiser steps")
    precision: Literal["float32", "bfloat16"] = Field("float32", description=(
        "bfloat16: forward and loss under bf16 autocast, fp32 weights and optimiser (1.4x SFT tokens/s at hidden "
        "256 on a CPU with AMX, compiled, the same loss; slower on the sandbox's hidden-128 model, whose steps are "
        "not matmul-bound)"))
    activation_checkpointing: bool = Field(False, description=(
        "keep only each decoder layer's input for the backward pass and recompute the rest (about a third more "
        "compute; what a 7B model at 4096 tokens needs: align run --dry-run shows the memory)"))
    compile: bool = Field(False, description=(
        "torch.compile the model (fused kernels: about +30% at hidden 256 on a CPU; the first steps pay about a "
        "minute of compilation, so it pays on long runs only)"))


class SamplingConfig(Strict):
    """The knobs every stage that samples answers shares (``align.generate``)."""

    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: keep the smallest set of tokens with this "
                                                      "much probability")
    max_new_tokens: int = Field(48, ge=1, description="longest answer, in tokens")


class ModelConfig(Strict):
    """The policy. ``path: null`` is the sandbox's tiny Llama, created from the fields below."""

    path: str | None = Field(None, description="local Hugging Face causal LM folder (safetensors); null: the "
                                               "sandbox's tiny Llama")
    hidden_size: int = Field(128, ge=8, description="tiny Llama: width of the residual stream")
    num_layers: int = Field(4, ge=1, description="tiny Llama: decoder layers")
    num_heads: int = Field(4, ge=1, description="tiny Llama: attention heads (key/value heads too)")
    intermediate_size: int = Field(384, ge=8, description="tiny Llama: width of the MLP")
    max_position_embeddings: int = Field(128, ge=16, description="tiny Llama: longest sequence it can read")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype when loading")
    architecture: str | None = Field(None, description=(
        "a copy of model.path's config.json (no weights): sizes the model for align run --dry-run's memory estimates "
        "on a machine without the checkpoint"))
    trust_remote_code: bool = Field(False, description="run a checkpoint's own code (off: safer)")

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        """The tiny Llama's width splits into its heads, each of an even width (rotary embeddings)."""
        if self.path is None and (self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2):
            raise ValueError(f"hidden_size {self.hidden_size} does not split into num_heads {self.num_heads} heads "
                             "of an even width (pick num_heads dividing hidden_size, e.g. 4 for 128)")
        return self


class LoraSettings(Strict):
    """LoRA through peft; the reference model is the policy with the adapter disabled."""

    enabled: bool = Field(False, description="train a LoRA adapter instead of every weight")
    r: int = Field(8, ge=1, description="rank of the adapter")
    alpha: int = Field(16, ge=1, description="scale of the adapter's update (alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      description="modules that get an adapter")
    merge: bool = Field(True, description="also save the merged weights in model/ for later stages")


class TrackingConfig(Strict):
    """Optional experiment tracking through accelerate's trackers; the run directory stays the truth.
    Tracking changes no round file, so no round is rebuilt for it."""

    backend: Literal["none", "tensorboard", "mlflow", "wandb"] = Field("none", description="tracker to log to")
    project: str = Field("align", description="tracker project / experiment name")


# ------------------------------------------------------------------------------- stages ---
class StageSpec(Strict):
    """One stage of the campaign; each becomes a round ``<NN>-<kind>[-<name>]``."""

    kind: str = Field(description="the stage kind (align.stages): sandbox, sft, rm, rs, prefs, eval, or a "
                                  "registered one")
    name: str | None = Field(None, description="suffix of the round id (a folder name); for rm, the axis: "
                                               "helpfulness or safety")
    seed: int | None = Field(None, description="this round's seed (default: the campaign's); ablations vary it")

    _name_ok = field_validator("name")(lambda cls, v: v if v is None else folder_name(v))

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in stage_kinds():
            raise ValueError(f"unknown stage kind {kind!r}; known kinds: {', '.join(stage_kinds())}")
        return kind

    @model_validator(mode="after")
    def _stage_accepts_name(self) -> StageSpec:
        names = get_stage(self.kind).names
        if names is not None and self.name not in names:
            raise ValueError(f"a {self.kind} stage is named {' or '.join(names)} (got {self.name!r})")
        return self


def _default_stages() -> list[StageSpec]:
    return [StageSpec(kind="sandbox"), StageSpec(kind="sft")]


class CampaignConfig(Strict):
    """A whole campaign: its name, seed, ordered stages, the policy, and (composed in by
    ``campaign_model``) every registered section."""

    campaign: str = Field(description="campaign name (a folder name: no path separators)")
    seed: int = Field(0, description="the seed of every round that names none of its own")
    stages: list[StageSpec] = Field(default_factory=_default_stages, min_length=1,
                                    description="the rounds to run, in order")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the policy")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="experiment tracking")

    _campaign_ok = field_validator("campaign")(lambda cls, v: folder_name(v))


# --------------------------------------------------------------------------- the registry ---
@dataclass(frozen=True)
class _Section:
    model: type[BaseModel]
    description: str
    optional: bool


_SECTIONS: dict[str, _Section] = {}
_COMPOSED: type[CampaignConfig] | None = None


def register_section(name: str, model: type[BaseModel], *, description: str, optional: bool = False) -> None:
    """Declare the top-level section ``name:`` with its model (``optional``: absent means None).
    Declaring the same section with the same model again is a no-op."""
    global _COMPOSED
    known = _SECTIONS.get(name)
    if known is not None:
        if known.model is not model:
            raise ValueError(f"config section {name!r} is declared twice: by {known.model.__module__}."
                             f"{known.model.__name__} and {model.__module__}.{model.__name__}")
        return
    if name in CampaignConfig.model_fields or name == "extends":
        raise ValueError(f"config section {name!r} is a core field of the campaign config")
    _SECTIONS[name] = _Section(model, description, optional)
    _COMPOSED = None


def campaign_model() -> type[CampaignConfig]:
    """The campaign config model with every section: those the stages declare (``align.stages``) and
    the shared ones (``register_section``)."""
    global _COMPOSED
    for name, model in stage_sections().items():  # imports every stage module first
        register_section(name, model, description=(model.__doc__ or name).strip().splitlines()[0])
    if _COMPOSED is None:
        fields: dict[str, Any] = {}
        for name, s in sorted(_SECTIONS.items()):
            fields[name] = ((s.model | None, Field(None, description=s.description)) if s.optional
                            else (s.model, Field(default_factory=s.model, description=s.description)))
        _COMPOSED = create_model("CampaignConfig", __base__=CampaignConfig, __module__=__name__, **fields)
    return _COMPOSED


def parse_config(data: dict[str, Any] | str) -> CampaignConfig:
    """A campaign config from a mapping or its JSON (no file, no line numbers: for configs made in code)."""
    model = campaign_model()
    return model.model_validate_json(data) if isinstance(data, str) else model.model_validate(data)


# ------------------------------------------------------------------------------ loading ---
@dataclass(frozen=True)
class _Layer:
    """One YAML file of an ``extends`` chain, with its node tree for line numbers."""

    path: Path
    root: yaml.Node | None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[arg-type]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, what: str = "config file") -> tuple[dict[str, Any], yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlignError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as e:
        raise AlignError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except IsADirectoryError:
        raise AlignError(f"{path}: is a directory, expected a YAML file") from None
    try:
        data, root = yaml.load(text, Loader=_UniqueKeyLoader), yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise AlignError(f"{path}{where}: malformed YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AlignError(f"{path}: expected a mapping of {'config sections' if what == 'config file' else 'fields'}, "
                         f"got {type(data).__name__}")
    return data, root


def read_yaml_model(path: Path, model: type[BaseModel], what: str) -> Any:
    """A small YAML file (a data spec, a suite) validated as ``model``; every problem is one AlignError
    naming the file (and the line, or the dotted field)."""
    data, _ = _read_yaml(path, what)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise AlignError(f"{path}: invalid {what}: {validation_message(e)}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged onto ``base``: mappings merge key by key; lists and values replace."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[_Layer]]:
    """The config of ``path`` with its ``extends`` chain merged in; the layers, this file first."""
    data, root = _read_yaml(path)
    layers = [_Layer(path, root)]
    base = data.pop("extends", None)
    if base is None:
        return data, layers
    if not isinstance(base, str) or not base:
        raise AlignError(f"{path}:{_line_of(root, ['extends']) or 1}: extends: expected the path of a base config")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve(), base_path))
        raise AlignError(f"{path}: extends makes a cycle: {cycle}")
    base_data, base_layers = _resolve(base_path, (*chain, path.resolve()))
    return _merge(base_data, data), layers + base_layers


def load_config(path: str | Path, overrides: list[str] | None = None) -> CampaignConfig:
    """Read a campaign YAML (with its ``extends`` chain), apply ``key.path=value`` overrides,
    validate, and check the stage order. Raises AlignError naming the file, line and dotted key."""
    path = Path(path)
    data, layers = _resolve(path)
    overridden = {}
    for item in overrides or []:
        overridden[_apply_override(data, item)] = item
    _locate_user_rules(data, [layer.path.parent for layer in layers])
    try:
        cfg = campaign_model().model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"]]
            msg = error_message(err)
            if err["type"] == "extra_forbidden":
                known = _known_keys(campaign_model(), loc[:-1])
                msg = "unknown key" + (f" (known keys here: {', '.join(known)})" if known else "")
            lines.append(f"{_where(layers, overridden, loc)}: {'.'.join(loc) or '(top level)'}: {msg}")
        raise AlignError("; ".join(lines)) from None
    _check_plan(cfg, layers, overridden)
    return cfg


def _locate_user_rules(data: dict[str, Any], folders: list[Path]) -> None:
    """A user rule ``module:function`` whose module is not on the import path but sits beside a config
    file (``myrules.py`` next to it), or a relative ``file.py:function``, becomes the absolute
    ``/path/myrules.py:function``: the run's own campaign.yaml then finds it from anywhere."""
    import importlib.util

    def locate(rule: Any) -> Any:
        if not isinstance(rule, str) or ":" not in rule:
            return rule
        module, _, fn = rule.rpartition(":")
        if module.endswith(".py"):
            candidates = [Path(module)] if Path(module).is_absolute() else [d / module for d in folders]
        else:
            try:
                if importlib.util.find_spec(module) is not None:
                    return rule
            except (ImportError, ValueError):
                pass
            candidates = [d / (module.replace(".", "/") + ".py") for d in folders]
        found = next((c for c in candidates if c.is_file()), None)
        return f"{found.resolve()}:{fn}" if found else rule

    combine = data.get("combine")
    if isinstance(combine, dict) and "rule" in combine:
        combine["rule"] = locate(combine["rule"])
    ablation = data.get("ablation")
    if isinstance(ablation, dict) and isinstance(ablation.get("rules"), list):
        for arm in ablation["rules"]:
            if isinstance(arm, dict) and "rule" in arm:
                arm["rule"] = locate(arm["rule"])


def _known_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The fields of the config model at ``loc`` (list indices skipped), for an unknown-key message."""
    import typing

    def model_in(annotation: Any) -> type[BaseModel] | None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        return next((m for a in typing.get_args(annotation) if (m := model_in(a)) is not None), None)

    node: type[BaseModel] | None = model
    for part in loc:
        if part.isdigit() or node is None:
            continue
        field = node.model_fields.get(part)
        node = model_in(field.annotation) if field is not None else None
    return sorted(node.model_fields) if node is not None else []


def _check_plan(cfg: CampaignConfig, layers: list[_Layer], overridden: dict[str, str]) -> None:
    """Every stage finds the earlier rounds it builds on (the registry's parent rules)."""
    try:
        plan_rounds(cfg)
    except PlanError as e:
        raise AlignError(f"{_where(layers, overridden, ['stages', str(e.index)])}: {e}") from None


def _where(layers: list[_Layer], overridden: dict[str, str], loc: list[str]) -> str:
    """``file:line`` of the YAML node at ``loc`` (the deepest match over the extends chain), or the
    ``--set`` override that supplied it."""
    matching = [item for key, item in overridden.items()  # overrides of this key, of a key inside it, of its section
                if loc[: len(key.split("."))] == key.split(".") or (loc and key.split(".")[: len(loc)] == loc)]
    if matching:
        return " ".join(f"--set {item}" for item in matching)
    best: tuple[int, int, Path] | None = None
    for layer in layers:
        depth, line = _depth_and_line(layer.root, loc)
        if line and (best is None or depth > best[0]):
            best = (depth, line, layer.path)
    return f"{best[2]}:{best[1]}" if best else str(layers[0].path)


def _apply_override(data: dict[str, Any], item: str) -> str:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise AlignError(f"--set {item}: expected KEY.PATH=VALUE")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise AlignError(f"--set {item}: {part} is not a section (a value cannot hold keys)")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        node[parts[-1]] = raw
    return key


def _depth_and_line(root: yaml.Node | None, loc: list[str]) -> tuple[int, int | None]:
    """How deep ``loc`` goes in the YAML tree, and the 1-based line of the deepest node reached."""
    node, line, depth = root, None, 0
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                break
            line = next(k for k, v in node.value if v is match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
            line = node.start_mark.line + 1
        else:
            break
        depth += 1
    return depth, line


def _line_of(root: yaml.Node | None, loc: list[str]) -> int | None:
    return _depth_and_line(root, loc)[1]


def config_to_yaml(cfg: CampaignConfig) -> str:
    """The resolved config (every default filled in, no ``extends``) as YAML."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
