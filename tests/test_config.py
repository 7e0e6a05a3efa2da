"""Config loading: shipped configs validate; bad keys, types and values name the key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.config import CampaignConfig, config_to_yaml, load_config
from align.errors import AlignError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


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
     "c.yaml:4: sft.learning_rat: Extra inputs are not permitted"),          # unknown key
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
