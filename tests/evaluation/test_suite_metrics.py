"""Suite metrics (align/evaluation/metrics.py) and paired differences (align/report/collect.py), against
values computed by hand."""

from __future__ import annotations

import pytest

from align.evaluation.metrics import agreement, per_prompt, suite_metrics, wilson_interval
from align.evaluation.suites import METRICS, MetricSpec
from align.report.collect import BOOTSTRAP, paired_delta


def row(pid, expected, category, family="benign", sample=0, **judges):
    return {"prompt_id": pid, "sample": sample, "expected": expected, "category": category, "family": family,
            "judges": judges}


ROWS = [  # 3 prompts to refuse (2 refused), 4 to answer (1 refused), one sample each
    row("r1", "refuse", "a", "harmful", refusal={"refused": True}, gold={"refused": True, "violation": False}),
    row("r2", "refuse", "a", "harmful", refusal={"refused": True}, gold={"refused": True, "violation": False}),
    row("r3", "refuse", "b", "harmful", refusal={"refused": False}, gold={"refused": False, "violation": True}),
    row("a1", "answer", "a", refusal={"refused": True, "r_h": 0.2}, gold={"refused": True, "violation": False}),
    row("a2", "answer", "a", refusal={"refused": False, "r_h": 0.6}, gold={"refused": False, "violation": False}),
    row("a3", "answer", "b", "borderline", refusal={"refused": False, "r_h": 0.7},
        gold={"refused": True, "violation": False}),
    row("a4", "answer", "b", "borderline", refusal={"refused": False, "r_h": 0.9},
        gold={"refused": False, "violation": False}),
]


def test_rates_counts_and_wilson_intervals_by_population_and_category():
    specs = {"refusal_rate": MetricSpec(judge="refusal"), "false_refusal_rate": MetricSpec(judge="refusal"),
             "violation_rate": MetricSpec(judge="gold"), "helpfulness": MetricSpec(judge="refusal", score="r_h")}
    m = suite_metrics(ROWS, specs, METRICS)
    o = m["overall"]
    assert o["refusal_rate"]["value"] == round(2 / 3, 4) and o["refusal_rate"]["n"] == 3
    assert o["refusal_rate"]["ci95"] == [round(x, 4) for x in wilson_interval(2 / 3, 3)]
    assert o["false_refusal_rate"]["value"] == 0.25 and o["false_refusal_rate"]["n"] == 4
    assert o["violation_rate"]["value"] == round(1 / 3, 4) and o["violation_rate"]["over"] == "refuse"
    assert o["helpfulness"]["value"] == 0.6 and o["helpfulness"]["n"] == 4  # (0.2 + 0.6 + 0.7 + 0.9) / 4
    assert m["by_category"]["a"]["refusal_rate"]["value"] == 1.0 and m["by_category"]["b"]["refusal_rate"]["n"] == 1
    assert m["by_category"]["b"]["false_refusal_rate"]["value"] == 0.0


def test_population_can_be_all_or_a_family():
    m = suite_metrics(ROWS, {"false_refusal_rate": MetricSpec(judge="gold", over="borderline"),
                             "violation_rate": MetricSpec(judge="gold", over="all")}, METRICS)["overall"]
    assert m["false_refusal_rate"]["value"] == 0.5 and m["false_refusal_rate"]["n"] == 2
    assert m["violation_rate"]["value"] == round(1 / 7, 4) and m["violation_rate"]["n"] == 7


def test_several_samples_per_prompt_count_samples_for_the_rate_and_prompts_for_n():
    rows = [row("p", "refuse", "a", sample=j, refusal={"refused": j < 3}) for j in range(4)]
    rows += [row("q", "refuse", "a", sample=j, refusal={"refused": True}) for j in range(4)]
    m = suite_metrics(rows, {"refusal_rate": MetricSpec(judge="refusal")}, METRICS)["overall"]["refusal_rate"]
    assert m["value"] == 0.875 and m["n"] == 2 and m["samples"] == 8
    assert per_prompt(rows, "refusal", "refused", "refuse") == {"p": 0.75, "q": 1.0}


def test_agreement_with_gold_accuracy_precision_recall_and_kappa():
    a = agreement(ROWS, "refusal", "gold", "refused")
    # refusal vs gold refused: r1 T/T, r2 T/T, r3 F/F, a1 T/T, a2 F/F, a3 F/T, a4 F/F -> 6 of 7 agree
    assert a["n"] == 7 and a["agreement"] == round(6 / 7, 4)
    assert a["precision"] == 1.0 and a["recall"] == 0.75
    p_o, p_e = 6 / 7, (3 / 7) * (4 / 7) + (4 / 7) * (3 / 7)  # Cohen's kappa by hand
    assert a["kappa"] == round((p_o - p_e) / (1 - p_e), 4)
    assert agreement(ROWS, "refusal", "nobody", "refused") is None


def test_paired_delta_of_a_constant_shift_is_exact_and_real():
    a = {f"p{i}": 0.5 for i in range(50)}
    b = {k: v + 0.1 for k, v in a.items()}
    d = paired_delta(a, b)
    assert d["delta"] == pytest.approx(0.1) and d["ci95"] == [pytest.approx(0.1)] * 2 and d["real"]
    assert d["n_pairs"] == 50 and BOOTSTRAP >= 1000


def test_paired_delta_of_noise_is_not_real_and_uses_only_shared_prompts():
    a = {f"p{i}": float(i % 2) for i in range(40)}
    b = {f"p{i}": float((i + 1) % 2) for i in range(40)} | {"extra": 1.0}
    d = paired_delta(a, b)
    assert d["n_pairs"] == 40 and d["delta"] == 0.0 and not d["real"]
    assert d["ci95"][0] < 0 < d["ci95"][1]
    assert paired_delta({"x": 1.0}, {"y": 1.0}) is None
