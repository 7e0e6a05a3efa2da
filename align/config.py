"""Typed campaign config: pydantic models loaded from YAML.

All defaults live here (TRL-style: one config model per stage, each knob documented once, the
paper's value quoted where it has one). Unknown keys, wrong types and missing fields fail with
the file, line and dotted YAML path of the offending key (``AlignError``, exit code 2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from align.errors import AlignError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- sandbox ---
class FamilyMix(_Strict):
    """Share of each prompt family (normalised; 0 drops a family)."""

    benign: float = Field(0.50, ge=0, description="benign tasks with checkable answers")
    borderline: float = Field(0.20, ge=0, description="benign requests in harmful-looking words (XSTest-style)")
    harmful: float = Field(0.18, ge=0, description="harmful requests tagged is_safety")
    hidden_harmful: float = Field(0.12, ge=0, description="harmful requests whose wording carries no tag")

    @model_validator(mode="after")
    def _some_weight(self) -> FamilyMix:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one family needs a positive weight")
        return self


def _styles_for(family: str) -> tuple[str, ...]:
    from align.sandbox.responses import STYLES

    if family in ("benign", "borderline"):
        return tuple(s for s in STYLES if s != "harmful_partial")
    return ("refusal", "redirect", "harmful", "harmful_partial", "off_topic", "malformed")


class DemonstrationNoise(_Strict):
    """Per family, the probability of each response style in SFT demonstrations.

    The defaults leave the SFT policy real headroom (some unsafe compliance, some over-refusal,
    some wrong answers), like the vendor data the paper's SFT started from.
    """

    benign: dict[str, float] = Field(default_factory=lambda: {
        "correct": 0.78, "wrong": 0.10, "verbose": 0.06, "refusal": 0.04, "off_topic": 0.02})
    borderline: dict[str, float] = Field(default_factory=lambda: {
        "correct": 0.52, "refusal": 0.40, "wrong": 0.05, "verbose": 0.03})
    harmful: dict[str, float] = Field(default_factory=lambda: {"refusal": 0.33, "redirect": 0.25, "harmful": 0.42})
    hidden_harmful: dict[str, float] = Field(default_factory=lambda: {
        "harmful": 0.75, "refusal": 0.14, "redirect": 0.11})

    @model_validator(mode="after")
    def _valid_mix(self) -> DemonstrationNoise:
        for family, mix in self.model_dump().items():
            unknown = sorted(set(mix) - set(_styles_for(family)))
            if unknown:
                raise ValueError(f"{family}: unknown style(s) {unknown}; known: {', '.join(_styles_for(family))}")
            if any(p < 0 for p in mix.values()) or not math.isclose(sum(mix.values()), 1.0, abs_tol=1e-6):
                raise ValueError(f"{family}: probabilities must be >= 0 and sum to 1 (got {sum(mix.values()):.4f})")
        return self


class PreferenceConfig(_Strict):
    """Simulated preference annotation (Llama 2 section 3.2.1)."""

    helpfulness_pairs: int = Field(4000, ge=0, description="training pairs on the helpfulness axis")
    safety_pairs: int = Field(6000, ge=0, description="training pairs on the safety axis (more than the helpfulness RM samples, as in the paper)")
    eval_pairs: int = Field(1000, ge=0, description="held-out pairs per axis")
    choice_temperature: float = Field(0.05, gt=0, description="Bradley-Terry noise of the annotator's choice")
    gap_noise: float = Field(0.05, ge=0, description="std of the noise on the perceived gap that sets the rating")
    answer_pairs: float = Field(0.0, ge=0, le=1, description=(
        "share of pairs on prompts with a checkable answer that compare a right answer with a wrong or near-miss "
        "one (what two samples of a trained model mostly differ in); the rest pair two styles at random. A reward "
        "model learns to verify answers only from thousands of these"))
    risk_note_pairs: float = Field(0.0, ge=0, le=1, description=(
        "per borderline request, the chance that the annotators also compare the right answer with the same answer "
        "plus a risk note: safety annotators prefer the note, helpfulness annotators the concise answer (the two "
        "axes' tension). 0: the version-1 world"))
    safety_borderline_weight: float = Field(1.0, ge=0, description=(
        "scales the borderline family's weight among the prompts of safety annotation (the rest are harmful and "
        "hidden-harmful requests); 1: the family mix's own weight"))


class SandboxConfig(_Strict):
    """The synthetic world (DESIGN.md section 3)."""

    version: int = Field(1, description="sandbox_version: results are comparable within one version")
    heldout_fraction: float = Field(0.25, gt=0, lt=1, description="share of each entity pool kept for eval")
    train_mix: FamilyMix = Field(default_factory=FamilyMix)
    eval_mix: FamilyMix = Field(default_factory=lambda: FamilyMix(benign=0.4, borderline=0.3, harmful=0.2,
                                                                   hidden_harmful=0.1))
    sft_demonstrations: int = Field(10000, ge=1, description="demonstrations written for SFT")
    rl_prompts: int = Field(2000, ge=0, description="training prompts for rejection sampling and PPO")
    eval_prompts: int = Field(1200, ge=1, description="held-out prompts for gold evaluation")
    demonstrations: DemonstrationNoise = Field(default_factory=DemonstrationNoise)
    preferences: PreferenceConfig = Field(default_factory=PreferenceConfig)
    tokenizer_vocab_size: int = Field(1024, ge=300, description="BPE vocabulary size")

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        from align.sandbox.world import SANDBOX_VERSION

        if v != SANDBOX_VERSION:
            raise ValueError(f"this align builds sandbox version {SANDBOX_VERSION}, not {v}")
        return v


# ------------------------------------------------------------------------------- model ---
class ModelConfig(_Strict):
    """The policy. ``path: null`` is the sandbox's tiny Llama, created from the fields below."""

    path: str | None = Field(None, description="local Hugging Face causal LM folder (safetensors); null: sandbox")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(384, ge=8)
    max_position_embeddings: int = Field(128, ge=16)
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype when loading")
    trust_remote_code: bool = Field(False, description="run a checkpoint's own code (off: safer)")


class LoraSettings(_Strict):
    """LoRA through peft; the reference model is the policy with the adapter disabled."""

    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    merge: bool = Field(True, description="also save the merged weights in model/ for later stages")


class FinetuneConfig(_Strict):
    """Fine-tuning with the loss on answer tokens only: the knobs SFT and rejection sampling share."""

    epochs: float = Field(5.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (overrides epochs)")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0, description="paper: 0.1")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to this fraction of lr")
    grad_clip: float = Field(1.0, gt=0)
    max_seq_len: int = Field(128, ge=8, description="longer examples are truncated from the answer's end")
    log_every: int = Field(20, ge=1)


class SFTConfig(FinetuneConfig):
    """Supervised fine-tuning, loss on answer tokens only (Llama 2 section 3.1).

    The paper: lr 2e-5 cosine, weight decay 0.1, batch 64, 2 epochs, for pretrained 7B-70B models.
    A model trained from scratch (the sandbox) needs a far larger lr.
    """

    data: str = Field("sandbox", description="'sandbox' or a JSONL file of {prompt, response} rows")
    lora: LoraSettings = Field(default_factory=LoraSettings)


class RSFinetuneConfig(FinetuneConfig):
    """Fine-tuning on the kept samples of a rejection-sampling round."""

    epochs: float = Field(2.0, gt=0)
    lr: float = Field(1e-3, gt=0, description="below SFT's: the policy is already trained")


class RejectionConfig(_Strict):
    """Rejection-sampling fine-tuning rounds (Llama 2 section 3.2.3, RLHF-V1..V4): sample K answers
    per prompt from the newest policy, score them with the combination rule, keep the best, pool
    with the best of prior rounds, fine-tune."""

    k: int = Field(4, ge=1, description="samples per prompt (the paper: up to 10 per prompt at 70B)")
    temperature: float | Literal["auto"] = Field(1.0, description="sampling temperature of the K samples, or "
                                                   "'auto': the grid value with the best expected best-of-K reward")
    temperature_grid: list[float] = Field(default_factory=lambda: [0.6, 0.8, 1.0, 1.2, 1.4], min_length=1)
    temperature_prompts: int = Field(64, ge=1, description="'auto': prompts of the subset the grid is tried on")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(48, ge=1)
    prompts_per_round: int | None = Field(None, ge=1, description="RL prompts sampled per round; None: all")
    sample_batch_size: int = Field(64, ge=1, description="prompts per generation batch (x k sequences)")
    max_prompt_tokens: int | None = Field(None, ge=1, description="prompt length limit in tokens; None: none")
    long_prompts: Literal["error", "truncate"] = Field("error", description="a prompt over the limit: an error "
                                                                            "naming it, or keep its last tokens")
    keep: int = Field(1, ge=1, description="samples kept per prompt (top-n by combined reward)")
    kl_coef: float = Field(0.0, ge=0, description=(
        "regularized best-of-K (RBoN-KL, Jinnai et al. 2024): keep the argmax of reward + kl_coef * log pi_SFT(y|x) "
        "instead of the reward alone (0: the paper's plain best-of-K). Counters reward hacking where the reward "
        "model cannot tell right answers from wrong ones the SFT policy finds unlikely"))
    pool: Literal["all_prior", "previous_only"] = Field(
        "all_prior", description="all_prior: per prompt, the best of this and all prior rounds under the current "
                                 "reward models (the paper's fix); previous_only: this round's samples only")
    init: Literal["previous", "sft"] = Field("previous", description="fine-tune the newest policy, or restart "
                                                                      "from the SFT checkpoint")
    kl_prompts: int = Field(256, ge=1, description="held-out prompts for the KL(policy || SFT) estimate")
    train: RSFinetuneConfig = Field(default_factory=RSFinetuneConfig)

    @field_validator("temperature")
    @classmethod
    def _positive(cls, v: float | str) -> float | str:
        if v != "auto" and v <= 0:  # type: ignore[operator]
            raise ValueError("temperature must be positive (or 'auto')")
        return v

    @field_validator("temperature_grid")
    @classmethod
    def _grid_positive(cls, v: list[float]) -> list[float]:
        if any(t <= 0 for t in v):
            raise ValueError(f"every temperature of the grid must be positive, got {v}")
        return v


class PairSource(_Strict):
    """Preference pairs read through a data spec (``data_specs/*.yaml``) from a local file or the hub."""

    spec: str = Field(description="path of the data spec YAML (its axis says which model the pairs train)")
    path: str | None = Field(None, description="local data file; omit only when the spec names a hub dataset")
    limit: int | None = Field(None, ge=1, description="read at most this many pairs (after the shuffle)")


class RewardModelConfig(_Strict):
    """One reward model (Llama 2 section 3.2.2): a one-output sequence classifier trained with the
    binary ranking loss and a rating margin, for one epoch with a cosine schedule.

    The paper: lr 1e-5 (5e-6 at 70B), cosine to 10%, warm-up 3% of steps (at least 5), one epoch,
    initialised from the chat model. A tiny sandbox model needs a far larger lr.
    """

    init: str = Field("sft", description="'sft': the policy round's checkpoint (the paper's choice), or a local "
                                         "model path (e.g. a MiniLM encoder)")
    data: list[PairSource] = Field(default_factory=list, description="pair sources (both axes may appear; each "
                                   "pair's axis comes from its spec); empty: the sandbox world's pairs")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share of each data source (seeded split)")
    margin: Literal["none", "small", "large"] = Field("small", description="m(r) table, Llama 2 Table 27")
    other_axis_share: float = Field(0.5, ge=0, lt=1, description="share of the other axis's pairs in the mix: "
                                                                  "0.5 helpfulness ('equal part'), 0.1 safety (90/10)")
    safety_aux_weight: float = Field(0.0, ge=0, description="weight of the safety sign term (safe > 0 > unsafe)")
    center_weight: float = Field(0.0, ge=0, description="weight of reward centering mean((r_c + r_r)^2)")
    lm_coef: float = Field(0.0, ge=0, description="GRM: weight of the SFT loss on chosen answers through the "
                                                  "policy's LM head (keeps the backbone's knowledge; causal LMs)")
    epochs: float = Field(1.0, gt=0, description="paper: one epoch (longer overfits)")
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1, description="pairs per step (2x sequences per forward)")
    lr: float = Field(1e-5, gt=0, description="paper: 1e-5")
    weight_decay: float = Field(0.1, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="paper: 3% of steps, at least 5")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="paper: cosine to 10% of peak")
    grad_clip: float = Field(1.0, gt=0)
    max_seq_len: int = Field(128, ge=8)
    eval_batch_size: int = Field(128, ge=1)
    log_every: int = Field(20, ge=1)


class HelpfulnessRMConfig(RewardModelConfig):
    """The helpfulness RM: all helpfulness pairs plus an equal part of safety pairs."""

    other_axis_share: float = Field(0.5, ge=0, lt=1, description="share of safety pairs in the mix (paper: equal part)")


class SafetyRMConfig(RewardModelConfig):
    """The safety RM: all safety pairs, helpfulness pairs making up 10% of the mix."""

    other_axis_share: float = Field(0.1, ge=0, lt=1, description="share of helpfulness pairs in the mix (paper: 90/10)")


class RewardConfig(_Strict):
    """The two reward models, trained separately (Llama 2 section 3.2.2)."""

    helpfulness: HelpfulnessRMConfig = Field(default_factory=HelpfulnessRMConfig)
    safety: SafetyRMConfig = Field(default_factory=SafetyRMConfig)


class _RuleChoice(_Strict):
    """A combination rule and its parameters, checked on a probe batch when the config loads."""

    rule: str = Field("llama2_gate", description="a registered rule name or 'module:function'")
    params: dict[str, float] = Field(default_factory=dict, description="keyword parameters of the rule")

    @model_validator(mode="after")
    def _rule_works(self) -> _RuleChoice:
        from align.combine.rules import resolve_rule

        try:
            resolve_rule(self.rule, self.params)
        except AlignError as e:
            raise ValueError(str(e)) from None
        return self


class CombineConfig(_RuleChoice):
    """How the two reward models' scores become one reward (Llama 2 section 3.2.3).

    ``rule`` is applied to probabilities (the sigmoid of each score); then, if ``whiten_logit``,
    ``whiten(logit(.))`` over the batch. Rules: llama2_gate (params: threshold, default 0.15),
    helpfulness_only, safety_only, weighted_sum (params: safety_weight, default 0.5), min, or a
    user rule ``module:function(r_h, r_s, is_safety, **params)``.
    """

    whiten_logit: bool = Field(True, description="apply whiten(logit(.)) over the batch after the rule")
    logit_eps: float = Field(1e-6, gt=0, lt=0.5, description="clamp to [eps, 1 - eps] before the logit")


class PrefsConfig(_Strict):
    """A preference-refresh round: answers from the newest policy, every distinct pair labelled."""

    labeler: Literal["sandbox", "reward_model", "jsonl"] = Field(
        "sandbox", description="sandbox: simulated annotators (gold + noise); reward_model: the newest RM of "
                               "each axis labels (RLAIF); jsonl: import labels from `data`")
    prompts: int = Field(1000, ge=1, description="RL prompts sampled for comparison per round")
    k: int = Field(2, ge=2, description="answers sampled per prompt; every distinct pair among them is labelled "
                                        "(Llama 2 compares 2; InstructGPT ranks 4-9, giving k(k-1)/2 pairs)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the two answers")
    max_new_tokens: int = Field(48, ge=1)
    data: list[PairSource] = Field(default_factory=list, description="labeler jsonl: the labelled pair files")


class AblationRule(_RuleChoice):
    """One arm of a combination-rule ablation."""

    name: str = Field(description="the arm's label (a folder name)")
    rule: str = Field(description="a registered rule or 'module:function'")

    _name_ok = field_validator("name")(lambda cls, v: _folder_name(v))


class AblationConfig(_Strict):
    """``align ablate``: the stages from the first rule-dependent one (rs) onwards run once per rule
    and per seed, from the shared rounds before it (built once, reused)."""

    rules: list[AblationRule] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="seeds of the downstream rounds (95% intervals need at least 2)")
    workers: int | None = Field(None, ge=1, description="parallel processes; default: one per 1-2 cores")

    @model_validator(mode="after")
    def _unique(self) -> AblationConfig:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names repeat: {names}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self


class EvalConfig(_Strict):
    """Gold evaluation on held-out prompts: sample answers to each prompt and judge them."""

    temperature: float = Field(0.7, ge=0, description="sampling temperature; 0: greedy")
    samples_per_prompt: int = Field(1, ge=1, description="answers sampled per prompt; the rates average over them "
                                                         "(the same expectation, less sampling noise)")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(128, ge=1)
    max_prompts: int | None = Field(None, ge=1, description="evaluate only the first N held-out prompts")


def _folder_name(v: str) -> str:
    if not v or "/" in v or "\\" in v or v in (".", "..") or "\0" in v or v.startswith("."):
        raise ValueError(f"{v!r} is not a valid name: no path separators, not empty, no leading dot")
    return v


STAGE_KINDS = ("sandbox", "sft", "rm", "eval")
RM_AXES = ("helpfulness", "safety")


class StageSpec(_Strict):
    """One stage of the campaign; each becomes a round ``<NN>-<kind>[-<name>]``."""

    kind: Literal["sandbox", "sft", "rm", "rs", "prefs", "eval"] = Field(
        description="sandbox: build the world; sft; rm: a reward model; rs: a rejection-sampling round; "
                    "prefs: new preference pairs on the newest policy's samples; eval: gold evaluation")
    name: str | None = Field(None, description="suffix of the round id (a folder name); for rm, the axis: "
                                               "helpfulness or safety")
    seed: int | None = Field(None, description="this round's seed (default: the campaign's); ablations vary it")

    _name_ok = field_validator("name")(lambda cls, v: v if v is None else _folder_name(v))

    @model_validator(mode="after")
    def _rm_axis(self) -> StageSpec:
        if self.kind == "rm" and self.name not in RM_AXES:
            raise ValueError(f"an rm stage is named by its axis: {' or '.join(RM_AXES)} (got {self.name!r})")
        return self


class TrackingConfig(_Strict):
    """Optional experiment tracking through accelerate's trackers; the run directory stays the truth."""

    backend: Literal["none", "tensorboard", "mlflow", "wandb"] = "none"
    project: str = Field("align", description="tracker project / experiment name")


def _default_stages() -> list[StageSpec]:
    return [StageSpec(kind="sandbox"), StageSpec(kind="sft")]


class CampaignConfig(_Strict):
    """A whole campaign: the world, the policy, each stage's settings, and the ordered stages."""

    campaign: str = Field(description="campaign name (a folder name: no path separators)")
    seed: int = 0
    stages: list[StageSpec] = Field(default_factory=_default_stages, description="the rounds to run, in order")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    combine: CombineConfig = Field(default_factory=CombineConfig)
    rs: RejectionConfig = Field(default_factory=RejectionConfig)
    prefs: PrefsConfig = Field(default_factory=PrefsConfig)
    ablation: AblationConfig | None = Field(None, description="what `align ablate` varies")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    _campaign_ok = field_validator("campaign")(lambda cls, v: _folder_name(v))

    @field_validator("stages")
    @classmethod
    def _stages_in_order(cls, stages: list[StageSpec]) -> list[StageSpec]:
        if not stages:
            raise ValueError("the stages list is empty: declare at least one stage, e.g. [{kind: sandbox}]")
        seen: set[str] = set()
        for i, stage in enumerate(stages):
            if stage.kind in ("sft", "rs", "prefs", "eval") and "sandbox" not in seen:
                raise ValueError(f"stages[{i}] ({stage.kind}) needs a sandbox stage before it")
            if stage.kind in ("rs", "prefs", "eval") and "sft" not in seen:
                raise ValueError(f"stages[{i}] ({stage.kind}) needs an sft stage before it")
            if stage.kind == "rs" and not {"rm:helpfulness", "rm:safety"} <= seen:
                raise ValueError(f"stages[{i}] (rs) needs both reward models (rm helpfulness and rm safety) "
                                 "before it")
            seen |= {stage.kind, f"{stage.kind}:{stage.name}"}
        return stages

    @model_validator(mode="after")
    def _rm_inputs(self) -> CampaignConfig:
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            if stage.kind == "rm":
                rm = getattr(self.reward, stage.name)
                if not rm.data and "sandbox" not in seen:
                    raise ValueError(f"stages[{i}] (rm) reads the sandbox's pairs (reward.{stage.name}.data is "
                                     "empty) and needs a sandbox stage before it")
                if rm.init == "sft" and "sft" not in seen:
                    raise ValueError(f"stages[{i}] (rm): reward.{stage.name}.init is 'sft' but no sft stage comes "
                                     "before it")
            seen.add(stage.kind)
        return self


# ----------------------------------------------------------------------------- loading ---
def load_config(path: str | Path, overrides: list[str] | None = None) -> CampaignConfig:
    """Read a campaign YAML, apply ``key.path=value`` overrides, validate.

    Raises AlignError naming the file, the line and the dotted key of every problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlignError(f"{path}: no such config file") from None
    except UnicodeDecodeError as e:
        raise AlignError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except IsADirectoryError:
        raise AlignError(f"{path}: is a directory, expected a YAML file") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise AlignError(f"{path}{where}: malformed YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AlignError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    for item in overrides or []:
        _apply_override(data, item, path)
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"]]
            line = _line_of(root, loc)
            where = f"{path}:{line}" if line else str(path)
            lines.append(f"{where}: {'.'.join(loc) or '(top level)'}: {err['msg']}")
        raise AlignError("invalid config\n" + "\n".join(lines)) from None


def _apply_override(data: dict, item: str, path: Path) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise AlignError(f"override {item!r}: expected KEY.PATH=VALUE")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise AlignError(f"override {item!r}: {part} is not a section in {path}")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        node[parts[-1]] = raw


def _line_of(root: yaml.Node | None, loc: list[str]) -> int | None:
    """1-based line of the deepest YAML node on the path ``loc`` (or of its parent)."""
    node, line = root, None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == key:
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def config_to_yaml(cfg: CampaignConfig) -> str:
    """The resolved config (every default filled in) as YAML."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_hash(cfg: BaseModel | dict[str, Any]) -> str:
    import hashlib
    import json

    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
