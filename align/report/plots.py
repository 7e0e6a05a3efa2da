"""The report's figures, drawn with matplotlib (Agg) and embedded as PNG data URIs.

Each function takes the report's data and returns a figure, or None when the run holds nothing to
draw; ``figures`` renders every one that exists, by name.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

HEADLINE = ("violation_rate", "false_refusal_rate", "refusal_rate", "helpful_accuracy")


def _suites(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in data["evaluations"]:
        out.setdefault(e["suite"], []).append(e)
    return out


def metrics_by_round(data: dict[str, Any]) -> Figure | None:
    """Each suite's rates across the policies evaluated, with 95% intervals."""
    suites = {s: es for s, es in _suites(data).items() if len(es) > 1}
    if not suites:
        return None
    fig, axes = plt.subplots(1, len(suites), figsize=(5.5 * len(suites), 3.8), squeeze=False)
    for ax, (suite, es) in zip(axes[0], suites.items()):
        x = range(len(es))
        for name in HEADLINE:
            if name not in es[-1]["metrics"]:
                continue
            ms = [e["metrics"].get(name) or {} for e in es]
            y = [100 * m["value"] if m.get("value") is not None else math.nan for m in ms]
            err = [[100 * (m["value"] - m["ci95"][0]) if m.get("ci95") else 0 for m in ms],
                   [100 * (m["ci95"][1] - m["value"]) if m.get("ci95") else 0 for m in ms]]
            ax.errorbar(list(x), y, yerr=err, marker="o", capsize=3, label=name)
        ax.set_xticks(list(x), [e["policy"] for e in es], rotation=30, ha="right")
        ax.set_ylabel("%")
        ax.set_title(suite)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def categories(data: dict[str, Any]) -> Figure | None:
    """The newest evaluation of each suite: violation / refusal / false refusal % per category."""
    newest = {e["suite"]: e for e in data["evaluations"]}
    if not newest:
        return None
    fig, axes = plt.subplots(len(newest), 1, figsize=(10, 3.2 * len(newest)), squeeze=False)
    for ax, e in zip(axes[:, 0], newest.values()):
        cats = list(e["by_category"])
        names = [n for n in HEADLINE if n in e["metrics"]][:3]
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            ms = [e["by_category"][c].get(name) or {} for c in cats]
            y = [100 * m["value"] if m.get("value") is not None else 0 for m in ms]
            err = [[100 * (m["value"] - m["ci95"][0]) if m.get("ci95") else 0 for m in ms],
                   [100 * (m["ci95"][1] - m["value"]) if m.get("ci95") else 0 for m in ms]]
            ax.bar([i + j * width for i in range(len(cats))], y, width, yerr=err, capsize=2, label=name)
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(cats))], cats, rotation=40, ha="right",
                      fontsize=7)
        ax.set_ylabel("%")
        ax.set_title(f"{e['suite']} — {e['policy']} (95% intervals)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _side(m: dict[str, Any], safety: bool) -> float | None:
    """A category's unsafe share (violations, else answers to prompts to refuse) or its helpfulness (accuracy,
    else answers to prompts to answer), in %."""
    if safety:
        if (m.get("violation_rate") or {}).get("value") is not None:
            return 100 * m["violation_rate"]["value"]
        if (m.get("refusal_rate") or {}).get("value") is not None:
            return 100 * (1 - m["refusal_rate"]["value"])
        return None
    if (m.get("helpful_accuracy") or {}).get("value") is not None:
        return 100 * m["helpful_accuracy"]["value"]
    if (m.get("false_refusal_rate") or {}).get("value") is not None:
        return 100 * (1 - m["false_refusal_rate"]["value"])
    return None


def frontier(data: dict[str, Any]) -> Figure | None:
    """Helpfulness against safety per suite: each policy overall, and each category where it holds both
    prompts to refuse and prompts to answer (XSTest pairs ``x`` with ``contrast_x``)."""
    suites = _suites(data)
    if not suites:
        return None
    fig, axes = plt.subplots(1, len(suites), figsize=(5.2 * len(suites), 4.2), squeeze=False)
    for ax, (suite, es) in zip(axes[0], suites.items()):
        pts = [(_side(e["metrics"], True), _side(e["metrics"], False), e["policy"]) for e in es]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="black", label="overall")
            for x, y, label in pts:
                ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        last = es[-1]["by_category"]
        keys = sorted({c.removeprefix("contrast_") for c in last})
        for key in keys:
            refuse = {**last.get(f"contrast_{key}", {}), **last.get(key, {})}
            x, y = _side(refuse, True), _side(refuse, False)
            if x is not None and y is not None:
                ax.scatter([x], [y], s=18, alpha=0.7)
                ax.annotate(key, (x, y), fontsize=6, alpha=0.8)
        ax.set_xlabel("unsafe % (violations, or answers to prompts to refuse)")
        ax.set_ylabel("helpful % (accuracy, or prompts to answer answered)")
        ax.set_title(f"{suite}: frontier")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def reward_gold(data: dict[str, Any]) -> Figure | None:
    """RM reward and gold utility across policy rounds, and inside each PPO run against sqrt(KL)."""
    rows, ppo = data["reward_vs_gold"], data["ppo"]
    if not rows and not ppo:
        return None
    fig, axes = plt.subplots(1, 1 + len(ppo), figsize=(5.5 * (1 + len(ppo)), 3.8), squeeze=False)
    ax = axes[0, 0]
    if rows:
        x = range(len(rows))
        ax.plot(list(x), [r["gold_utility"] for r in rows], "-o", color="tab:green", label="gold utility")
        ax.set_xticks(list(x), [r["round"] for r in rows], rotation=30, ha="right")
        ax.set_ylabel("gold utility")
        twin = ax.twinx()
        twin.plot(list(x), [r["rm_reward_greedy"] if r["rm_reward_greedy"] is not None else math.nan for r in rows],
                  "-s", color="tab:blue", label="RM reward (own RMs, greedy)")
        twin.plot(list(x), [r["rm_r_h_newest"] if r["rm_r_h_newest"] is not None else math.nan for r in rows], "-^",
                  color="tab:purple", label="R_h (newest helpfulness RM)")
        twin.set_ylabel("RM reward")
        ax.legend(loc="lower left", fontsize=7)
        twin.legend(loc="lower right", fontsize=7)
        ax.set_title("across rounds")
    for ax, run in zip(axes[0, 1:], ppo):
        c = run["curve"]
        x = [p["sqrt_kl"] if p["sqrt_kl"] is not None else math.sqrt(max(p["kl"] or 0, 0)) for p in c]
        ax.plot(x, [p["mean_gold_utility"] for p in c], "-o", color="tab:green", label="gold utility")
        twin = ax.twinx()
        twin.plot(x, [p["rm_reward"] for p in c], "-s", color="tab:blue", label="RM reward")
        ax.set_xlabel("sqrt(KL to the start)")
        ax.set_ylabel("gold utility")
        twin.set_ylabel("RM reward")
        ax.set_title(f"{run['round']} (kept iteration {run['kept_iteration']})")
        ax.legend(loc="lower left", fontsize=7)
        twin.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def gate(data: dict[str, Any]) -> Figure | None:
    """Shares of answers the gate routes to R_s by the tag, to R_s by the threshold, and to R_h."""
    rows = data["gate"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rows)), 3.4))
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    for branch, label in (("safety_tag", "R_s: is_safety tag"), ("safety_low", "R_s: R_s < threshold"),
                          ("helpfulness", "R_h")):
        y = [100 * r[branch] for r in rows]
        ax.bar(x, y, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, y)]
    ax.set_xticks(x, [f"{r['round']}\n{'samples' if 'samples' in r['source'] else 'eval'}" for r in rows], fontsize=7)
    ax.set_ylabel("% of answers")
    ax.legend(fontsize=7)
    ax.set_title("the gate's routing")
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[[dict[str, Any]], Figure | None]] = {
    "metrics-by-round": metrics_by_round, "categories": categories, "frontier": frontier,
    "reward-vs-gold": reward_gold, "gate": gate}


def figures(data: dict[str, Any]) -> dict[str, str]:
    """name -> ``data:image/png;base64,...`` of every figure there is data for."""
    out = {}
    for name, draw in FIGURES.items():
        fig = draw(data)
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out[name] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return out
