"""Evaluating a policy on a suite (align/evaluation/evaluate.py): resumable chunked generation, every
judge on every answer, and the metric record."""

from __future__ import annotations

import json

import pytest

import align.evaluation.evaluate as ev
from align.evaluation.config import EvalConfig
from align.evaluation.judge import Verdict
from align.evaluation.suites import METRICS, MetricSpec, Suite
from align.records import Prompt

PROMPTS = [Prompt(id=f"p{i}", text=f"What is {i} plus {i}?", family="harmful" if i % 3 == 0 else "benign",
                  category="c", is_safety=i % 3 == 0) for i in range(7)]
CFG = EvalConfig(samples_per_prompt=2, max_new_tokens=6, temperature=1.0, batch_size=4)


@pytest.fixture
def counted(monkeypatch):
    """Count the prompts sample_k is asked to answer."""
    calls = []
    real = ev.sample_k

    def sample_k(model, tokenizer, prompts, **kw):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(ev, "sample_k", sample_k)
    monkeypatch.setattr(ev, "CHUNK_PROMPTS", 3)
    return calls


def test_generation_resumes_after_the_last_whole_chunk_with_the_same_answers(policy, tokenizer, tmp_path, counted):
    full = ev.generate_answers(policy, tokenizer, PROMPTS, CFG, seed=5, checkpoint_dir=tmp_path / "a", log=print)
    assert counted == [3, 3, 1] and len(full) == 14 and [r["sample"] for r in full[:2]] == [0, 1]
    # a run killed while drawing the third chunk: two whole chunks on disk, the third cut short
    lines = (tmp_path / "a" / ev.GENERATIONS).read_text().splitlines()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ev.GENERATIONS).write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:20])
    (tmp_path / "b" / "fingerprint").write_text((tmp_path / "a" / "fingerprint").read_text())
    counted.clear()
    resumed = ev.generate_answers(policy, tokenizer, PROMPTS, CFG, seed=5, checkpoint_dir=tmp_path / "b", log=print)
    assert counted == [1] and resumed == full
    # other settings do not resume from these chunks
    counted.clear()
    other = CFG.model_copy(update={"max_new_tokens": 5})
    ev.generate_answers(policy, tokenizer, PROMPTS, other, seed=5, checkpoint_dir=tmp_path / "b", log=print)
    assert counted == [3, 3, 1]
    assert json.loads((tmp_path / "b" / ev.GENERATIONS).read_text().splitlines()[0])["chunk"] == 0


class Refuses:
    """Refuses exactly the answers that start with 'No'."""

    name, scores = "refusal", ("p",)

    def judge_many(self, prompts, responses):
        return [Verdict(refused=r.startswith("No"), label="x", scores={"p": 0.5}) for r in responses]


def test_every_judge_labels_every_answer_and_the_record_counts_them():
    answers = [{"prompt_id": p.id, "sample": 0, "response": "No." if i < 2 else "Yes.", "finished": True}
               for i, p in enumerate(PROMPTS)]
    suite = Suite("s", PROMPTS, {"refusal": Refuses()}, {"refusal_rate": MetricSpec(judge="refusal"),
                                                        "false_refusal_rate": MetricSpec(judge="refusal")})
    record, rows = ev.evaluate_suite(None, None, suite, CFG.model_copy(update={"samples_per_prompt": 1}), seed=0,
                                     answers=answers)
    assert [r["expected"] for r in rows] == ["refuse", "answer", "answer", "refuse", "answer", "answer", "refuse"]
    assert rows[0]["judges"] == {"refusal": {"refused": True, "label": "x", "p": 0.5}}
    assert record["metrics"]["refusal_rate"]["value"] == round(1 / 3, 4)  # p0 refused; p3, p6 answered
    assert record["metrics"]["false_refusal_rate"]["value"] == 0.25  # p1 of p1, p2, p4, p5
    assert record["n"] == 7 and record["n_refuse"] == 3 and set(METRICS) >= set(record["metrics"])
