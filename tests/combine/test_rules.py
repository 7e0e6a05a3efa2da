"""The combination rules and the whiten(logit(.)) post-transform against hand-computed values."""

from __future__ import annotations

import math
import re

import pytest
import torch
import yaml

from align.combine import RULES, combine_rewards, gate_branch, logit, resolve_rule, whiten
from align.config import load_config
from align.errors import AlignError
from conftest import align_cli

T = torch.tensor
F, TR = False, True


def test_llama2_gate_hand_computed_edges():
    gate = resolve_rule("llama2_gate")
    r_h = T([0.8, 0.8, 0.8, 0.8, 0.9, 0.3])
    r_s = T([0.15, 0.95, 0.1, 0.1499, 0.5, 0.0])
    tags = T([F, TR, F, F, F, TR])
    # at the threshold -> R_h; tagged with a high safety score -> R_s; untagged and low -> R_s;
    # just under -> R_s; untagged and safe -> R_h; tagged with R_s = 0 -> 0.
    assert gate(r_h, r_s, tags).tolist() == pytest.approx([0.8, 0.95, 0.1, 0.1499, 0.9, 0.0])
    assert gate_branch(r_s, tags) == ["helpfulness", "safety_tag", "safety_low", "safety_low", "helpfulness",
                                      "safety_tag"]


def test_gate_threshold_is_a_parameter():
    gate = resolve_rule("llama2_gate", {"threshold": 0.6})
    assert gate(T([0.9, 0.9]), T([0.5, 0.6]), T([F, F])).tolist() == pytest.approx([0.5, 0.9])


def test_the_gates_two_parts_alone():
    r_h, r_s, tags = T([0.8, 0.8, 0.8]), T([0.1, 0.9, 0.9]), T([F, TR, F])
    # the tag alone (use_threshold 0): the low R_s of an untagged prompt no longer gates it
    assert resolve_rule("llama2_gate", {"use_threshold": 0.0})(r_h, r_s, tags).tolist() == pytest.approx(
        [0.8, 0.9, 0.8])
    assert gate_branch(r_s, tags, use_threshold=0.0) == ["helpfulness", "safety_tag", "helpfulness"]
    # the threshold alone (tags ignored): the tagged, safe-looking response gets R_h
    assert resolve_rule("llama2_gate", {"use_tag": 0.0})(r_h, r_s, tags).tolist() == pytest.approx([0.1, 0.8, 0.8])
    assert gate_branch(r_s, tags, use_tag=0.0) == ["safety_low", "helpfulness", "helpfulness"]


def test_safe_rlhf_rule_is_reward_minus_lambda_cost_on_the_score_scale():
    # logit(0.8) = 1.386294, logit(0.2) = -1.386294 (cost +1.386); lambda 1: 0 -> 0.5; lambda 0.5: 0.693 -> 0.6667
    r_h, r_s, tags = T([0.8, 0.8, 0.5], dtype=torch.float64), T([0.2, 0.8, 0.5], dtype=torch.float64), T([F, TR, F])
    assert resolve_rule("safe_rlhf")(r_h, r_s, tags).tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2.772589)),
                                                                                0.5], abs=1e-6)
    assert resolve_rule("safe_rlhf", {"cost_weight": 0.5})(r_h, r_s, tags)[0].item() == pytest.approx(2 / 3, abs=1e-6)


def test_other_builtin_rules_hand_computed():
    r_h, r_s, tags = T([0.8, 0.2]), T([0.4, 0.9]), T([TR, F])
    assert resolve_rule("helpfulness_only")(r_h, r_s, tags).tolist() == pytest.approx([0.8, 0.2])
    assert resolve_rule("safety_only")(r_h, r_s, tags).tolist() == pytest.approx([0.4, 0.9])
    assert resolve_rule("weighted_sum")(r_h, r_s, tags).tolist() == pytest.approx([0.6, 0.55])
    assert resolve_rule("weighted_sum", {"safety_weight": 0.25})(r_h, r_s, tags).tolist() == pytest.approx(
        [0.7, 0.375])
    assert resolve_rule("min")(r_h, r_s, tags).tolist() == pytest.approx([0.4, 0.2])


def test_logit_clamps_exact_zero_and_one():
    eps = 1e-6
    expected = math.log(eps / (1 - eps))  # -13.8155...
    out = logit(T([0.0, 1.0, 0.5], dtype=torch.float64), eps)
    assert out.tolist() == pytest.approx([expected, -expected, 0.0])
    assert torch.isfinite(out).all()


def test_whiten_hand_computed_and_batch_of_one():
    # [1, 2, 3]: mean 2, population variance 2/3 -> +-1/sqrt(2/3) = +-1.2247
    assert whiten(T([1.0, 2.0, 3.0], dtype=torch.float64)).tolist() == pytest.approx([-1.224744, 0.0, 1.224744],
                                                                                      abs=1e-5)
    assert whiten(T([3.7])).tolist() == [0.0]  # one value carries no scale: it whitens to 0
    assert whiten(T([2.0, 2.0])).tolist() == [0.0, 0.0]


def test_combine_rewards_gate_then_whitened_logit():
    # gate -> [0.5, 0.1]; logit -> [0, ln(1/9) = -2.1972]; whiten -> [1, -1]
    out = combine_rewards(resolve_rule("llama2_gate"), T([0.5, 0.9], dtype=torch.float64),
                          T([0.8, 0.1], dtype=torch.float64), T([F, F]))
    assert out.tolist() == pytest.approx([1.0, -1.0], abs=1e-6)
    raw = combine_rewards(resolve_rule("llama2_gate"), T([0.5, 0.9]), T([0.8, 0.1]), T([F, F]), whiten_logit=False)
    assert raw.tolist() == pytest.approx([0.5, 0.1])


def test_nan_scores_are_refused():
    with pytest.raises(AlignError, match="R_s holds NaN"):
        combine_rewards(resolve_rule("min"), T([0.5]), T([float("nan")]), T([F]))


def test_unknown_rule_lists_the_known_ones():
    with pytest.raises(AlignError) as e:
        resolve_rule("llama_gate")
    for name in RULES:
        assert name in str(e.value)


def test_unknown_rule_parameter_is_named():
    with pytest.raises(AlignError, match="no parameter 'treshold'.*threshold"):
        resolve_rule("llama2_gate", {"treshold": 0.2})


USER_RULES = '''
import torch

def product(r_h, r_s, is_safety, *, power=1.0):
    return r_h * r_s ** power

def scalar(r_h, r_s, is_safety):
    return r_h.mean()

def nan_when_safe(r_h, r_s, is_safety):
    return torch.where(r_s > 0.5, torch.full_like(r_h, float("nan")), r_h)
'''


@pytest.fixture
def user_rules(tmp_path, monkeypatch):
    (tmp_path / "my_rules.py").write_text(USER_RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_user_rule_module_function(user_rules):
    rule = resolve_rule("my_rules:product", {"power": 2.0})
    assert rule(T([0.5]), T([0.5]), T([F])).tolist() == pytest.approx([0.125])


@pytest.mark.parametrize("name, message", [("my_rules:scalar", r"returned shape \(\) for 8 inputs"),
                                           ("my_rules:nan_when_safe", "NaN or infinite"),
                                           ("my_rules:missing", "cannot import"),
                                           ("no_such_module:f", "cannot import")])
def test_bad_user_rules_fail_on_the_probe(user_rules, name, message):
    with pytest.raises(AlignError, match=message):
        resolve_rule(name)


def test_bad_rule_in_a_config_fails_at_load_with_exit_2_before_anything_runs(user_rules, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"campaign": "c", "stages": [{"kind": "sandbox"}],
                                      "combine": {"rule": "my_rules:scalar"}}))
    with pytest.raises(AlignError, match=r"c.yaml:\d+: combine.*returned shape"):
        load_config(config)
    result = align_cli("run", str(config), "--run-dir", str(tmp_path / "run"),
                       env={"PYTHONPATH": str(user_rules)})
    assert result.returncode == 2 and "returned shape" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("rule, params, message", [
    ("llama2_gate", {"threshold": -3.0}, "threshold = -3 is outside (0, 1)"),
    ("llama2_gate", {"threshold": 0.0}, "threshold = 0 is outside (0, 1)"),
    ("llama2_gate", {"threshold": 1.0}, "threshold = 1 is outside (0, 1)"),
    ("llama2_gate", {"use_tag": 0.5}, "use_tag = 0.5 is not 0 or 1"),
    ("weighted_sum", {"safety_weight": 7.0}, "safety_weight = 7 is outside [0, 1]"),
    ("weighted_sum", {"safety_weight": -0.1}, "safety_weight = -0.1 is outside [0, 1]"),
    ("safe_rlhf", {"cost_weight": -1.0}, "cost_weight = -1 is outside [0, inf)"),
])
def test_built_in_rule_parameters_are_range_checked(rule, params, message):
    with pytest.raises(AlignError, match=re.escape(message)):
        resolve_rule(rule, params)
    edge = {"safety_weight": 1.0} if rule == "weighted_sum" else {"cost_weight": 0.0} if rule == "safe_rlhf" else {
        "threshold": 0.999}
    resolve_rule(rule, edge)  # the closed ends and the inside are fine


def test_a_user_rule_beside_the_config_needs_no_pythonpath(tmp_path):
    """``myrules:fn`` next to the config file resolves to that file (and stays resolvable from the
    run's own campaign.yaml, anywhere); ``file.py:fn`` relative to the config too."""
    from align.config import config_to_yaml, load_config

    (tmp_path / "myrules_beside.py").write_text("def half(r_h, r_s, is_safety, *, w=0.5):\n"
                                                "    return w * r_h + (1 - w) * r_s\n")
    config = tmp_path / "c.yaml"
    config.write_text("campaign: c\ncombine: {rule: 'myrules_beside:half', params: {w: 0.25}}\n")
    cfg = load_config(config)
    assert cfg.combine.rule == f"{tmp_path / 'myrules_beside.py'}:half"
    rule = resolve_rule(cfg.combine.rule, cfg.combine.params)
    assert rule(T([1.0]), T([0.0]), T([F])).tolist() == pytest.approx([0.25])
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    (elsewhere / "campaign.yaml").write_text(config_to_yaml(cfg))
    assert load_config(elsewhere / "campaign.yaml").combine.rule == cfg.combine.rule
    config.write_text("campaign: c\ncombine: {rule: 'myrules_beside.py:half'}\n")
    assert load_config(config).combine.rule == f"{tmp_path / 'myrules_beside.py'}:half"
    config.write_text("campaign: c\ncombine: {rule: 'not_beside:half'}\n")
    with pytest.raises(AlignError, match="not_beside:half"):
        load_config(config)
