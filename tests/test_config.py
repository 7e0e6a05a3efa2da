"""Config loading: shipped configs validate; bad keys, types and values name the key and line."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from align.campaign import plan_rounds
from align.config import CampaignConfig, campaign_model, config_to_yaml, load_config
from align.errors import AlignError
from align.sandbox.config import VERSION_DEFAULTS, SandboxConfig

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, CampaignConfig)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIGS[0])
    (tmp_path / "c.yaml").write_text(config_to_yaml(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg


def _load(tmp_path, text, overrides=None):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return load_config(p, overrides)


@pytest.mark.parametrize("text,expected", [
    ("campaign: x\nsft:\n  epochs: 1\n  learning_rat: 0.1\n",
     "c.yaml:4: sft.learning_rat: unknown key (known keys here: activation_checkpointing, batch_size, compile, data,"),  # unknown key
    ("campaign: x\nsft:\n  batch_size: many\n", "c.yaml:3: sft.batch_size:"),  # wrong type
    ("seed: 3\n", "campaign: Field required"),                              # missing required field
])
def test_config_errors_name_the_key_and_line(tmp_path, text, expected):
    with pytest.raises(AlignError) as e:
        _load(tmp_path, text)
    assert expected in str(e.value)


def test_nested_noise_mix_must_sum_to_one(tmp_path):
    with pytest.raises(AlignError) as e:
        _load(tmp_path, "campaign: x\nsandbox:\n  demonstrations:\n    harmful: {refusal: 0.5, harmful: 0.2}\n")
    assert "sandbox.demonstrations" in str(e.value) and "sum to 1" in str(e.value)


def test_unknown_style_is_listed(tmp_path):
    with pytest.raises(AlignError, match="unknown style"):
        _load(tmp_path, "campaign: x\nsandbox:\n  demonstrations:\n    benign: {correct: 0.5, rude: 0.5}\n")


def test_campaign_name_with_path_separator_is_rejected(tmp_path):
    with pytest.raises(AlignError, match="campaign"):
        _load(tmp_path, "campaign: ../escape\n")


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(AlignError, match=r"c.yaml:2: malformed YAML"):
        _load(tmp_path, "campaign: x\nsft: a: b\n")  # "mapping values are not allowed here"


def test_overrides_apply_and_are_validated(tmp_path):
    cfg = _load(tmp_path, "campaign: x\n", ["sft.epochs=2", "model.path=/some/dir"])
    assert cfg.sft.epochs == 2 and cfg.model.path == "/some/dir"
    with pytest.raises(AlignError, match="sft.epochs"):
        _load(tmp_path, "campaign: x\n", ["sft.epochs=-1"])


def test_each_reward_model_keeps_its_paper_mix_when_other_keys_are_set(tmp_path):
    cfg = _load(tmp_path, "campaign: x\nreward:\n  safety: {lr: 0.1}\n  helpfulness: {lr: 0.2}\n")
    assert cfg.reward.safety.other_axis_share == 0.1          # 90/10
    assert cfg.reward.helpfulness.other_axis_share == 0.5     # an equal part


def test_a_config_extends_another_and_overrides_it(tmp_path):
    (tmp_path / "base.yaml").write_text("campaign: base\nseed: 3\nsft: {epochs: 2, lr: 0.01}\n"
                                        "stages: [{kind: sandbox}, {kind: sft}]\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ncampaign: child\nsft: {lr: 0.02}\n"
                                         "stages: [{kind: sandbox}]\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.campaign, cfg.seed, cfg.sft.epochs, cfg.sft.lr) == ("child", 3, 2, 0.02)  # mappings merge
    assert [s.kind for s in cfg.stages] == ["sandbox"]  # lists replace
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(config_to_yaml(cfg))
    assert "extends" not in resolved.read_text() and load_config(resolved) == cfg


def test_errors_in_an_extends_chain_name_the_file_and_line_that_set_the_key(tmp_path):
    (tmp_path / "base.yaml").write_text("campaign: base\nsft:\n  epochs: 2\n  batch_size: many\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nsft:\n  lr: -1\n")
    with pytest.raises(AlignError) as e:
        load_config(tmp_path / "child.yaml")
    assert "base.yaml:4: sft.batch_size:" in str(e.value) and "child.yaml:3: sft.lr:" in str(e.value)
    (tmp_path / "loop.yaml").write_text("extends: loop2.yaml\ncampaign: x\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(AlignError, match="extends makes a cycle"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\ncampaign: x\n")
    with pytest.raises(AlignError, match="nowhere.yaml: no such config file"):
        load_config(tmp_path / "orphan.yaml")


def test_a_bad_override_is_named_as_the_override(tmp_path):
    with pytest.raises(AlignError, match=r"^--set sft.epochs=-1: sft.epochs: Input should be greater than 0"):
        _load(tmp_path, "campaign: x\nsft:\n  epochs: 3\n", ["sft.epochs=-1"])


def _models(model: type[BaseModel], seen: set) -> list[type[BaseModel]]:
    """``model`` and every config model nested in its fields."""
    if model in seen:
        return []
    seen.add(model)
    out = [model]
    for field in model.model_fields.values():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            for inner in (arg, *typing.get_args(arg)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out += _models(inner, seen)
    return out


def test_every_config_field_has_a_description():
    """Descriptions feed `--help` and the docs: none may be missing, in any section of any stage."""
    missing = [f"{m.__name__}.{name}" for m in _models(campaign_model(), set())
               for name, field in m.model_fields.items() if not field.description]
    assert missing == []


def test_the_ablation_config_shares_the_default_campaigns_rounds():
    """Every field but the stage list and the ablation section equals the default campaign's, and the
    shared rounds have the same ids and parents: `align ablate` after `make demo` reuses them."""
    demo = load_config(ROOT / "configs" / "sandbox.yaml")
    ablate = load_config(ROOT / "configs" / "ablate-combination.yaml")
    assert demo.model_dump(exclude={"stages", "ablation"}) == ablate.model_dump(exclude={"stages", "ablation"})
    shared = [(p.id, [q.id for q in p.parents]) for p in plan_rounds(ablate)[:4]]
    assert shared == [(p.id, [q.id for q in p.parents]) for p in plan_rounds(demo)[:4]]
    assert load_config(ROOT / "configs" / "smoke.yaml").rs.kl_coef == demo.rs.kl_coef  # the smoke campaign extends it


def test_the_version_2_overlay_is_the_default_campaign_on_world_2():
    """configs/sandbox-v2.yaml changes the world and the three settings world 3 changed, nothing else."""
    demo = load_config(ROOT / "configs" / "sandbox.yaml")
    v2 = load_config(ROOT / "configs" / "sandbox-v2.yaml")
    assert (demo.sandbox.version, demo.reward.helpfulness.head, demo.reward.helpfulness.lr, demo.rs.kl_coef) == \
        (3, "loglik", 5e-4, 0.0)
    assert (v2.sandbox.version, v2.reward.helpfulness.head, v2.reward.helpfulness.lr, v2.rs.kl_coef) == \
        (2, "last", 2e-3, 1.0)
    assert v2.sandbox.preferences.answer_pairs == 0.0 and demo.sandbox.preferences.answer_pairs == 0.5
    assert (v2.sandbox.preferences.safety_hidden_weight, demo.sandbox.preferences.safety_hidden_weight) == (0.25, 1.0)
    bare_v2 = SandboxConfig(version=2).preferences  # every knob version 3 changes is back at version 2's value
    assert [getattr(v2.sandbox.preferences, k) for k in VERSION_DEFAULTS[3]["preferences"]] == \
        [getattr(bare_v2, k) for k in VERSION_DEFAULTS[3]["preferences"]]
    changed = {"sandbox", "reward", "rs"}
    assert demo.model_dump(exclude=changed) == v2.model_dump(exclude=changed)
    assert demo.reward.safety == v2.reward.safety


def test_with_model_path_the_tiny_llamas_fields_are_not_read(tmp_path, policy, tokenizer):
    """A local checkpoint's round depends on model.path (and dtype, trust_remote_code), never on the
    tiny Llama's sizes, which it does not use: changing model.hidden_size does not rebuild SFT."""
    from align.config import parse_config
    from align.config_reads import ConfigReads
    from align.models import build_policy

    policy.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    view = ConfigReads(parse_config({"campaign": "c", "model": {"path": str(tmp_path / "m"), "hidden_size": 64}}))
    build_policy(view.model, tokenizer_dir=None, seed=0)
    assert set(view.reads()) == {"model.path", "model.trust_remote_code", "model.dtype"}


def test_tiny_llama_heads_must_split_its_width(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("campaign: c\nmodel: {hidden_size: 32, num_heads: 3}\n")
    with pytest.raises(AlignError, match=r"c.yaml:2: model: hidden_size 32 does not split into num_heads 3"):
        load_config(config)
    load_config(config, ["model.path=/somewhere"])  # a checkpoint's own config decides its shapes
