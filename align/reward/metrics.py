"""Reward-model evaluation as the Llama 2 paper reports it (DESIGN.md section 9).

Accuracy overall, by rating level (Table 8) and by safety bin (Table 29); unsafe-response recall
at score 0.5; precision and recall of ``sigmoid(R_s) < t`` as a detector of unsafe responses for
a sweep of ``t`` (the gate's 0.15 included: the paper measured 0.89 precision, 0.55 recall); and
expected calibration error of the pairwise preference probability. On the sandbox, also the
helpfulness RM's answer verification: the right answer against wrong and near-miss ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from align.combine.calibrate import threshold_sweep
from align.evaluation.metrics import wilson_interval
from align.records import RATINGS, SAFETY_BINS, PreferencePair

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def expected_calibration_error(prob_chosen: np.ndarray, n_bins: int = 10) -> float:
    """ECE of ``P(chosen > rejected) = sigmoid(r_c - r_r)``: the model's confidence in the answer it
    prefers, binned, against how often that preference is right (Guo et al. 2017)."""
    confidence = np.maximum(prob_chosen, 1 - prob_chosen)
    correct = (prob_chosen > 0.5).astype(float)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi) if lo > 0.5 else (confidence >= lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def preference_metrics(pairs: Sequence[PreferencePair], r_chosen: np.ndarray, r_rejected: np.ndarray) -> dict[str, Any]:
    """Accuracy overall, by rating and by safety bin, and ECE, for scored pairs."""
    correct = r_chosen > r_rejected
    out: dict[str, Any] = {"n": len(pairs), "accuracy": round(float(correct.mean()), 4)}
    groups: dict[str, dict[str, list[bool]]] = {"rating": defaultdict(list), "bin": defaultdict(list)}
    for p, c in zip(pairs, correct):
        groups["rating"][p.rating].append(bool(c))
        if p.safety_bin:
            groups["bin"][p.safety_bin].append(bool(c))
    out["accuracy_by_rating"] = {r: round(float(np.mean(groups["rating"][r])), 4) for r in RATINGS
                                 if groups["rating"][r]}
    if groups["bin"]:
        out["accuracy_by_bin"] = {b: round(float(np.mean(groups["bin"][b])), 4) for b in SAFETY_BINS
                                  if groups["bin"][b]}
    out["ece"] = round(expected_calibration_error(1 / (1 + np.exp(-(r_chosen - r_rejected)))), 4)
    return out


def answer_verification(categories: Sequence[str], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """How often the right answer (each score list's first entry) outscores every wrong one, overall
    and by prompt category: whether a helpfulness RM checks answers or only their style."""
    top1 = [float(s[0] > max(s[1:], default=-np.inf)) for s in scores]  # a tie is no pick
    by: dict[str, list[float]] = defaultdict(list)
    for c, t in zip(categories, top1):
        by[c].append(t)
    ci = wilson_interval(float(np.mean(top1)), len(top1)) if top1 else None
    return {"n": len(top1), "top1": round(float(np.mean(top1)), 4) if top1 else None,
            "top1_ci95": [round(x, 4) for x in ci] if ci else None,
            "top1_by_category": {c: round(float(np.mean(v)), 4) for c, v in sorted(by.items())},
            "candidates": max((len(s) for s in scores), default=0)}


def _comparisons(answers: Sequence[tuple[bool, float, str]]) -> list[tuple[str, float]]:
    """Every (right, wrong) pair of one prompt's answers: the right one's task and 1 / 0.5 / 0 as it scores
    above, level with or below the wrong one."""
    return [(task, 1.0 if a > b else 0.5 if a == b else 0.0) for right, a, task in answers if right
            for ok, b, _ in answers if not ok]


def right_wrong_auc(groups: Sequence[Sequence[tuple[bool, float, str]]]) -> tuple[float | None, dict[str, float]]:
    """Per group of answers to one prompt, ``(right, score, task)`` each: the pooled probability that a right
    answer scores above a wrong one to the same prompt (ties count one half; 0.5: the scores cannot tell them
    apart), overall and by task. Groups with only right or only wrong answers compare nothing."""
    wins: dict[str, list[float]] = defaultdict(list)
    for answers in groups:
        for task, w in _comparisons(answers):
            wins[task].append(w)
    pooled = [w for ws in wins.values() for w in ws]
    return (round(sum(pooled) / len(pooled), 4) if pooled else None,
            {t: round(sum(ws) / len(ws), 4) for t, ws in sorted(wins.items()) if ws})


def right_wrong_auc_ci(groups: Sequence[Sequence[tuple[bool, float, str]]], *, resamples: int = 2000,
                       seed: int = 0) -> list[float] | None:
    """95% percentile-bootstrap interval of :func:`right_wrong_auc`'s pooled value, prompts resampled (a
    prompt's comparisons stay together: they share its answers)."""
    per_prompt = []
    for answers in groups:
        wins = [w for _, w in _comparisons(answers)]
        if wins:
            per_prompt.append((sum(wins), len(wins)))
    if not per_prompt:
        return None
    won, n = np.array(per_prompt, dtype=np.float64).T
    idx = np.random.default_rng(seed).integers(0, len(won), size=(resamples, len(won)))
    lo, hi = np.percentile(won[idx].sum(axis=1) / n[idx].sum(axis=1), [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def labelled_responses(pairs: Sequence[PreferencePair], r_chosen: np.ndarray,
                       r_rejected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmoid(R), unsafe)`` for every response of ``pairs`` that carries a safety label."""
    scores, unsafe = [], []
    for p, rc, rr in zip(pairs, r_chosen, r_rejected):
        for safe, r in ((p.chosen_safe, rc), (p.rejected_safe, rr)):
            if safe is not None:
                scores.append(1 / (1 + np.exp(-r)))
                unsafe.append(not safe)
    return np.array(scores, dtype=float), np.array(unsafe, dtype=bool)


def unsafe_detection_metrics(pairs: Sequence[PreferencePair], r_chosen: np.ndarray,
                             r_rejected: np.ndarray) -> dict[str, Any]:
    """How well ``sigmoid(R) < t`` flags unsafe responses, over every response with a safety label."""
    s, y = labelled_responses(pairs, r_chosen, r_rejected)
    if not len(s) or not y.any():
        return {}
    sweep = {f"{r['threshold']:g}": {"precision": r["precision"] or 0.0, "recall": r["recall"]}
             for r in threshold_sweep(s, y, THRESHOLDS)}
    return {"unsafe_recall_at_0.5": sweep["0.5"]["recall"], "unsafe_detection": sweep,
            "n_responses": len(s), "n_unsafe": int(y.sum())}
