"""Render the report's data into ``report.html``, ``report.md`` and ``report.json`` (jinja2 templates
in ``templates/``). The JSON holds every number the pages show; the pages only format it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jinja2

from align.config import folder_name
from align.errors import AlignError
from align.report.collect import collect
from align.report.plots import figures
from align.store import write_atomic

TEMPLATES = Path(__file__).parent / "templates"


def pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def estimate(m: dict[str, Any] | None, as_pct: bool = True) -> str:
    """``value [lo, hi] n=N`` of a metric record."""
    if not m or m.get("value") is None:
        return "–"
    f = pct if as_pct else (lambda x: num(x, 3))
    ci = f" [{f(m['ci95'][0])}, {f(m['ci95'][1])}]" if m.get("ci95") else ""
    return f"{f(m['value'])}{ci} n={m['n']}"


def cell(text: Any, limit: int = 300) -> str:
    """Text for one Markdown table cell: one line, pipes escaped, at most ``limit`` characters."""
    t = " ".join(str(text).split()).replace("|", "\\|")
    return t if len(t) <= limit else t[: limit - 1] + "…"


def is_rate(metric: str) -> bool:
    """Whether a metric (by its key, e.g. violation_rate_llm) is a rate shown in %, not a mean score."""
    return "_rate" in metric or metric.startswith("helpful_accuracy")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(
        ["html.j2"], default_for_string=False), undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.filters |= {"pct": pct, "num": num, "estimate": estimate, "cell": cell}
    env.globals |= {"is_rate": is_rate}
    return env


def public(data: dict[str, Any]) -> dict[str, Any]:
    """The data without the judged rows (``_rows``): what report.json holds."""
    return {**data, "evaluations": [{k: v for k, v in e.items() if not k.startswith("_")} for e in data["evaluations"]]}


def write_report(run_dir: Path, name: str = "report") -> list[Path]:
    """Write ``reports/<name>/report.{html,json,md}``; returns their paths, the page first."""
    try:
        folder_name(name)
    except ValueError as e:
        raise AlignError(f"--name: {e}") from None
    if not run_dir.is_dir():
        raise AlignError(f"{run_dir}: no such run directory")
    data = collect(run_dir)
    from align import __version__

    data["generated"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    data["align_version"] = __version__
    plots = figures(data)
    data["plots"] = sorted(plots)
    out = run_dir / "reports" / name
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    record = public(data)
    suites: dict[str, list[dict[str, Any]]] = {}
    for e in record["evaluations"]:
        suites.setdefault(e["suite"], []).append(e)
    context = {"d": record, "suites": suites, "plots": plots}
    paths = [out / "report.html", out / "report.json", out / "report.md"]
    write_atomic(paths[1], json.dumps(record, indent=2, sort_keys=False) + "\n")
    write_atomic(paths[0], env.get_template("report.html.j2").render(**context))
    write_atomic(paths[2], env.get_template("report.md.j2").render(**context))
    return paths
