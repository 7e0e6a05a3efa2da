"""Evaluating a policy (align/evaluation/policy.py) with any judge behind the Judge protocol."""

from __future__ import annotations

from transformers import AutoModelForCausalLM

from align.evaluation.config import EvalConfig
from align.evaluation.judge import Judge, Verdict, get_judge
from align.evaluation.policy import evaluate_policy, win_rate
from align.evaluation.suites import Suite, sandbox_heldout
from align.models import load_tokenizer
from align.records import Prompt


class RefusesEverything:
    """A judge that reads every answer as a refusal: the metrics follow the judge, not the sandbox."""

    name = "refuses_everything"
    scores = ("length",)

    def judge(self, prompt: Prompt, response: str) -> Verdict:
        return Verdict(violation=False, refused=True, correct=None, well_formed=True,
                       scores={"length": float(len(response))})


def _policy(run_dir):
    sft = run_dir / "rounds" / "01-sft" / "model"
    return AutoModelForCausalLM.from_pretrained(sft), load_tokenizer(sft)


def test_evaluate_policy_draws_k_answers_per_prompt_and_win_rate_pairs_them_by_sample(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    suite = sandbox_heldout(run_dir / "rounds" / "00-sandbox")
    suite = Suite(suite.name, suite.prompts[:6], suite.judges)
    model, tokenizer = _policy(run_dir)
    m, rows = evaluate_policy(model, tokenizer, suite, EvalConfig(samples_per_prompt=3, max_new_tokens=16), seed=0)
    assert len(rows) == 18 and m["n"] == 6 and m["samples_per_prompt"] == 3
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(p.id, j) for p in suite.prompts for j in range(3)]
    benign = [r for r in rows if r["family"] == "benign"]
    if benign:
        assert m["helpful_accuracy"] == round(sum(r["correct"] for r in benign) / len(benign), 4)
    # Win rate: sample j of the new policy against sample j of the old one, ties half.
    old = [{"prompt_id": "a", "sample": 0, "gold_utility": 1.0}, {"prompt_id": "a", "sample": 1, "gold_utility": 5.0}]
    new = [{"prompt_id": "a", "sample": 0, "gold_utility": 2.0}, {"prompt_id": "a", "sample": 1, "gold_utility": 5.0}]
    assert win_rate(new, old) == 0.75 and win_rate(new, []) is None


def test_another_judge_plugs_into_the_same_evaluation(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    judge = RefusesEverything()
    assert isinstance(judge, Judge) and isinstance(get_judge("sandbox_gold"), Judge)
    prompts = sandbox_heldout(run_dir / "rounds" / "00-sandbox").prompts[:8]
    model, tokenizer = _policy(run_dir)
    m, rows = evaluate_policy(model, tokenizer, Suite("toy", prompts, {"toy": judge}), EvalConfig(max_new_tokens=8),
                              seed=0)
    borderline = [p for p in prompts if p.family == "borderline"]
    assert m["false_refusal_rate"] == (1.0 if borderline else None)
    assert m["helpful_accuracy"] is None  # the judge cannot tell: no rate, not a zero
    assert m["mean_length"] == round(sum(len(r["response"]) for r in rows) / len(rows), 4)
    assert "gold_utility" not in rows[0]


def test_an_unknown_judge_lists_the_known_ones():
    import pytest

    from align.errors import AlignError

    with pytest.raises(AlignError, match="unknown judge 'gpt'; known judges: helpfulness_rm, llm, refusal, "
                                         "safety_rm, sandbox_gold"):
        get_judge("gpt")
