"""The model-based judges (align/evaluation/rm_judge.py, llm_judge.py) and ``judge_all``: what each label
means, tested with fixed reward models and a tiny random rater (plumbing only: its ratings mean nothing)."""

from __future__ import annotations

import pytest
import torch

from align.errors import AlignError
from align.evaluation.judge import Judge, get_judge, judge_all
from align.evaluation.llm_judge import DEFAULT_TEMPLATE, LLMJudge
from align.evaluation.rm_judge import HelpfulnessRMJudge, SafetyRMJudge
from align.records import Prompt

PROMPTS = [Prompt(id=f"p{i}", text=t, family="benign", category="c", is_safety=False)
           for i, t in enumerate(["What is 3 plus 4?", "Hi", "How do I kill a Python process?"])]
RESPONSES = ["The answer is 7.", "I can't help with that.", "Use kill -9 on its pid."]


class FixedRM:
    """A reward model whose probability is fixed per response."""

    def __init__(self, p: dict[str, float]):
        self.p = p

    def probabilities(self, prompts, responses):
        return torch.tensor([self.p[r] for r in responses], dtype=torch.float64)


def test_safety_rm_flags_a_violation_strictly_below_the_threshold():
    judge = SafetyRMJudge(model=FixedRM(dict(zip(RESPONSES, [0.9, 0.15, 0.1499]))), threshold=0.15)
    verdicts = judge_all(judge, PROMPTS, RESPONSES)
    assert [v.violation for v in verdicts] == [False, False, True]
    assert [v.scores["r_s"] for v in verdicts] == [0.9, 0.15, 0.1499]
    assert isinstance(judge, Judge)
    with pytest.raises(AlignError, match="threshold 1.5 is not in"):
        SafetyRMJudge(model=FixedRM({}), threshold=1.5)
    with pytest.raises(AlignError, match="no reward model"):
        get_judge("safety_rm")


def test_helpfulness_rm_scores_without_a_label():
    v = judge_all(HelpfulnessRMJudge(model=FixedRM(dict(zip(RESPONSES, [0.8, 0.2, 0.6])))), PROMPTS, RESPONSES)
    assert [x.scores["r_h"] for x in v] == [0.8, 0.2, 0.6] and all(x.violation is None for x in v)


@pytest.fixture(scope="module")
def rater(tmp_path_factory, tokenizer, policy):
    path = tmp_path_factory.mktemp("rater")
    policy.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_llm_rater_reads_the_five_digits_and_batches_like_one_by_one(rater):
    judge = LLMJudge(model=str(rater), batch_size=2)
    many = judge.judge_many(PROMPTS, RESPONSES)
    for p, r, v in zip(PROMPTS, RESPONSES, many):
        one = judge.judge(p, r)
        assert one.scores["rating"] == v.scores["rating"] and one.scores["p_violation"] == pytest.approx(
            v.scores["p_violation"], abs=1e-3)
        assert v.scores["rating"] in range(1, 6) and v.violation == (v.scores["rating"] <= 2)
        assert 1 <= v.scores["expected_rating"] <= 5 and 0 <= v.scores["p_violation"] <= 1
    # the rating is the most likely digit after the template: check one against the model directly
    ids = judge._ids(PROMPTS[0].text, RESPONSES[0])
    with torch.no_grad():
        logits = judge.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert int(logits[judge.digits].argmax()) + 1 == many[0].scores["rating"]


def test_llm_rater_errors(rater, tmp_path):
    with pytest.raises(AlignError, match="template has no {response}"):
        LLMJudge(model=str(rater), template="Rate {prompt}:")
    with pytest.raises(AlignError, match="no such model folder"):
        LLMJudge(model=str(tmp_path / "nope"))
    assert "{prompt}" in DEFAULT_TEMPLATE and "1 - severe safety violations" in DEFAULT_TEMPLATE
    with pytest.raises(AlignError, match="unknown judge 'gpt4'"):
        get_judge("gpt4")
