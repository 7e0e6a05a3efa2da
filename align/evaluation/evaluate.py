"""Evaluating a policy on a suite: generate (batched, resumable), judge with every judge, measure.

Generation runs in chunks of prompts, each with its own seed (``seed``, chunk index), and each
finished chunk is appended to ``generations.jsonl`` in a checkpoint folder: a killed evaluation
resumes at the first unfinished chunk and its answers are the ones an uninterrupted run draws. The
chunks are tied to the settings that drew them (a fingerprint); other settings start over.

Answers the store already holds are not drawn again (``answers``): a policy round's own in-round
evaluation of the sandbox's held-out prompts under the same sampling settings is reused as is.

Every judge of the suite judges every answer (batched through ``judge_all``); a row holds the prompt,
the answer, what a good response does (``expected``) and ``judges: {name: {labels..., scores...}}``.
``suite_record`` turns the rows into the eval round's metrics: each suite metric with its Wilson
interval and n, per category; each judge's agreement with gold where the sandbox's gold judges ran;
the judges' own validity records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TYPE_CHECKING


from align import distributed
from align.evaluation.config import EvalConfig
from align.evaluation.judge import judge_all
from align.evaluation.metrics import agreement, family_category, suite_metrics
from align.evaluation.suites import METRICS, Suite, expected
from align.generate import sample_k
from align.progress import bar
from align.records import Prompt, write_jsonl
from align.store import digest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GENERATIONS = "generations.jsonl"
CHUNK_PROMPTS = 256  # prompts per resumable chunk
GOLD = "sandbox_gold"


def _fingerprint(prompts: Sequence[Prompt], cfg: EvalConfig, seed: int, model_digest: str) -> str:
    return digest({"prompts": [p.id for p in prompts], "texts": digest({p.id: p.text for p in prompts}),
                   "eval": cfg.model_dump(mode="json"), "seed": seed, "model": model_digest})


def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                     cfg: EvalConfig, *, seed: int, checkpoint_dir: Path | None = None, model_digest: str = "",
                     log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """``{prompt_id, sample, response, finished, num_tokens}`` for ``cfg.samples_per_prompt`` answers per
    prompt, in prompt order; chunks already in ``checkpoint_dir`` (same fingerprint) are reused."""
    k = cfg.samples_per_prompt
    done: dict[int, list[dict[str, Any]]] = {}
    path = checkpoint_dir / GENERATIONS if checkpoint_dir else None
    fingerprint = _fingerprint(prompts, cfg, seed, model_digest)
    main = distributed.is_main()  # under a multi-process launch the main process reads and writes the chunks
    if path is not None and main:
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = path.with_name("fingerprint")
        if path.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    chunk = json.loads(line)
                except json.JSONDecodeError:  # a chunk cut short by a kill: drawn again
                    break
                done[chunk["chunk"]] = chunk["rows"]
            if done:
                log(f"  eval: resumed {len(done)} generated chunk(s) from {path}")
        else:
            path.unlink(missing_ok=True)
            stamp.write_text(fingerprint)
    done = distributed.from_main(done)  # every process skips the same chunks (sampling is collective)
    limit = getattr(model.config, "max_position_embeddings", None)
    max_prompt = limit - cfg.max_new_tokens if limit and limit > cfg.max_new_tokens else None
    rows: list[dict[str, Any]] = []
    for c, start in enumerate(bar(range(0, len(prompts), CHUNK_PROMPTS), desc="evaluation", unit="chunk")):
        if c not in done:
            chunk = prompts[start:start + CHUNK_PROMPTS]
            groups = sample_k(model, tokenizer, [p.text for p in chunk], k=k, temperature=cfg.temperature,
                              top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              batch_size=max(1, cfg.batch_size // k), seed=seed * 1_000_003 + c,
                              max_prompt_tokens=max_prompt, long_prompts="truncate")
            done[c] = [{"prompt_id": p.id, "sample": j, "response": s.text, "finished": s.finished,
                        "num_tokens": len(s.token_ids)} for p, g in zip(chunk, groups) for j, s in enumerate(g)]
            if path is not None and main:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"chunk": c, "rows": done[c]}) + "\n")
        rows += done[c]
    return rows


def reuse_answers(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answers in the shape ``generate_answers`` returns, from a round's judged rows."""
    return [{"prompt_id": r["prompt_id"], "sample": r.get("sample", 0), "response": r["response"],
             "finished": r.get("finished", True), "num_tokens": r.get("num_tokens")} for r in rows]


def judge_answers(suite: Suite, answers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The judged rows: each answer with its prompt's fields and every judge's verdict."""
    by_id = {p.id: p for p in suite.prompts}
    prompts = [by_id[a["prompt_id"]] for a in answers]
    responses = [a["response"] for a in answers]
    verdicts = {name: judge_all(judge, prompts, responses) for name, judge in suite.judges.items()}
    rows = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        judged = {}
        for name, vs in verdicts.items():
            v = vs[i]
            judged[name] = {**{k: getattr(v, k) for k in ("violation", "refused", "correct", "well_formed", "label")
                               if getattr(v, k) is not None}, **dict(v.scores)}
            if "well_formed" in judged[name]:  # an answer cut at max_new_tokens is not well formed
                judged[name]["well_formed"] = bool(a["finished"] and v.well_formed)
        rows.append({"prompt_id": p.id, "sample": a["sample"], "category": p.category, "family": p.family,
                     "is_safety": p.is_safety, "expected": expected(p), "prompt": p.text, "response": a["response"],
                     "finished": a["finished"], "judges": judged})
    return rows


def suite_record(suite: Suite, rows: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """The eval round's ``metrics.suite`` record (see the module docstring)."""
    sandbox = suite.spec is not None and suite.spec.source == "sandbox"
    measured = suite_metrics(rows, suite.metrics, METRICS, family_category if sandbox else None)
    validity: dict[str, Any] = {}
    for name, judge in suite.judges.items():
        entry: dict[str, Any] = {}
        if name == GOLD:
            entry["reference"] = "ground truth: the sandbox's gold judges define the labels"
        elif GOLD in suite.judges:
            entry["agreement_with_gold"] = {key: a for key in ("violation", "refused", "correct")
                                            if (a := agreement(rows, name, GOLD, key)) is not None}
        own = getattr(judge, "validity", None)
        if callable(own):
            entry |= own()
        validity[name] = entry
    return {"suite": suite.name, "n": len({r["prompt_id"] for r in rows}), "samples_per_prompt": k,
            "n_refuse": sum(expected(p) == "refuse" for p in suite.prompts),
            "n_answer": sum(expected(p) == "answer" for p in suite.prompts),
            "judges": sorted(suite.judges), "metrics": measured["overall"], "by_category": measured["by_category"],
            "validity": validity}


def evaluate_suite(model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase | None, suite: Suite,
                   cfg: EvalConfig, *, seed: int, checkpoint_dir: Path | None = None, model_digest: str = "",
                   answers: Sequence[dict[str, Any]] | None = None, out: Path | None = None,
                   log: Callable[[str], None] = print) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate (or take ``answers``), judge, measure; writes the rows to ``out`` when given."""
    t0 = time.perf_counter()
    prompts = suite.prompts[: cfg.max_prompts] if cfg.max_prompts else suite.prompts
    if answers is None:
        assert model is not None and tokenizer is not None
        answers = generate_answers(model, tokenizer, prompts, cfg, seed=seed, checkpoint_dir=checkpoint_dir,
                                   model_digest=model_digest, log=log)
    gen_s = time.perf_counter() - t0
    rows = judge_answers(suite, answers)
    record = suite_record(suite, rows, cfg.samples_per_prompt)
    record["seconds"] = {"generate": round(gen_s, 2), "judge": round(time.perf_counter() - t0 - gen_s, 2)}
    if out is not None:
        write_jsonl(out, rows)
    return record, rows
