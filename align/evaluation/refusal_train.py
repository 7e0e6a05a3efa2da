"""Train and validate the ``refusal`` judge's head on XSTest's human labels.

``python -m align.evaluation.refusal_train --data-dir DIR [--out align/evaluation/weights]`` reads every ``*.csv``
in DIR (XSTest's ``model_completions``: one file per model, fields ``prompt``, ``completion``, ``final_label``),
prints the leave-one-file-out table and writes the head trained on all files.

Why leave one *file* out: each file holds one model's answers to the same 450 prompts, and the judge is for models
it has not seen, so the honest measure trains on the other models only. Hyperparameters (the L2 strength ``C``, the
class-weight power and the weight of the embedding block) are chosen inside the training files by the same rule,
one training file held out at a time, keeping the grid point whose worst held-out file is best (the target is a
floor on every model, not an average). Training always

- weights the files equally (one verbose model must not set the style of a refusal),
- adds, for each refusal whose first sentence refuses, that first sentence alone as a full refusal (short refusals
  look unlike long ones to a linear model; without it a model trained on verbose refusals calls a one-line
  "Sorry, I can't help with that." compliant).

The encoder features are computed once per data directory and process (``load_dataset``), so the whole table costs
one encoder pass.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from align.errors import AlignError
from align.evaluation.refusal import (
    COSINE_NAMES,
    DEFAULT_WEIGHTS,
    ENCODER_NAME,
    ENCODER_PACKAGE,
    FEATURE_NAMES,
    FEATURES_VERSION,
    LABELS,
    LEXICAL_NAMES,
    MAX_TOKENS,
    STRING_MATCH_PREFIXES,
    XSTEST_LABELS,
    Features,
    Head,
    featurize,
    xstest_string_match,
)

FIELDS = ("prompt", "completion", "final_label")
GRID_C = (0.01, 0.03, 0.1, 0.3)
GRID_CLASS_WEIGHT_POWER = (0.0, 0.5)  # 0: plain, 1 would be sklearn's "balanced"
GRID_EMBEDDING_WEIGHT = (0.0, 0.25, 1.0)  # multiplies the standardised embedding block (0: lexical + cosines only)


@dataclass
class Dataset:
    """Every row of every CSV, with its file, label index and features."""

    files: list[str]  # file names, sorted
    file_of: np.ndarray  # (n,) index into files
    prompts: list[str]
    responses: list[str]
    labels: np.ndarray  # (n,) index into LABELS
    sha256: dict[str, str]
    features: Features


def read_completions(path: Path) -> tuple[list[str], list[str], list[int]]:
    """Prompts, responses (missing ones empty) and label indices of one XSTest completions CSV."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for field in FIELDS:
            if field not in header:
                raise AlignError(f"{path}: missing field {field!r} (header: {', '.join(header) or 'empty'})")
        prompts, responses, labels = [], [], []
        for row_no, row in enumerate(reader, start=1):
            label = (row["final_label"] or "").strip()
            if label not in XSTEST_LABELS:
                raise AlignError(f"{path}: row {row_no}: final_label {label!r}; expected one of "
                                 f"{', '.join(XSTEST_LABELS)}")
            prompts.append(row["prompt"] or "")
            responses.append(row["completion"] or "")
            labels.append(LABELS.index(XSTEST_LABELS[label]))
    return prompts, responses, labels


_CACHE: dict[tuple[str, tuple[str, ...]], Dataset] = {}


def load_dataset(data_dir: str | Path) -> Dataset:
    """All ``*.csv`` in ``data_dir`` with their features (cached per directory and file contents)."""
    data_dir = Path(data_dir)
    paths = sorted(data_dir.glob("*.csv"))
    if not paths:
        raise AlignError(f"{data_dir}: no *.csv files")
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    key = (str(data_dir.resolve()), tuple(sha[p.name] for p in paths))
    if key not in _CACHE:
        prompts: list[str] = []
        responses: list[str] = []
        labels: list[int] = []
        file_of: list[int] = []
        for i, path in enumerate(paths):
            p, r, y = read_completions(path)
            prompts += p
            responses += r
            labels += y
            file_of += [i] * len(y)
        _CACHE[key] = Dataset(files=[p.name for p in paths], file_of=np.array(file_of), prompts=prompts,
                              responses=responses, labels=np.array(labels), sha256=sha,
                              features=featurize(prompts, responses))
    return _CACHE[key]


# --------------------------------------------------------------------------------------------------------- fitting

def _training_set(ds: Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and file indices of ``rows`` (empty responses left out: a rule labels them) plus the
    first-sentence copies of their refusals."""
    f = ds.features
    rows = rows[~f.empty[rows]]
    first = rows[(ds.labels[rows] != 0) & f.opens_with_refusal[rows]]
    x = np.vstack([f.matrix(rows), f.first_matrix(first)])
    y = np.concatenate([ds.labels[rows], np.full(len(first), LABELS.index("full_refusal"))])
    return x, y, np.concatenate([ds.file_of[rows], ds.file_of[first]])


def fit_head(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, class_weight_power: float,
             embedding_weight: float) -> Head:
    """A multinomial logistic regression on standardised ``x``, each file weighing the same in total."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a constant feature (e.g. ``empty``) stays 0 after centring
    block = np.ones(x.shape[1])
    block[len(LEXICAL_NAMES) + len(COSINE_NAMES):] = embedding_weight  # scales the embedding block's L2 penalty
    missing = [LABELS[k] for k in range(len(LABELS)) if not (y == k).any()]
    if missing:
        raise AlignError(f"the training files hold no {', '.join(missing)} rows: the head needs all three classes")
    weight = np.ones(len(y))
    for g in np.unique(groups):
        weight[groups == g] = len(y) / (len(np.unique(groups)) * (groups == g).sum())
    if class_weight_power:
        for k in range(len(LABELS)):
            weight[y == k] *= (weight.sum() / (len(LABELS) * weight[y == k].sum())) ** class_weight_power
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale * block, y, sample_weight=weight)
    coef, intercept = model.coef_ * block, model.intercept_  # classes_ is 0, 1, 2: LABELS order
    return Head(coef=coef.astype(np.float32), intercept=intercept.astype(np.float32), mean=mean.astype(np.float32),
                scale=scale.astype(np.float32), meta={})


def _predict(head: Head, ds: Dataset, rows: np.ndarray) -> np.ndarray:
    f = ds.features
    sub = Features(dense=f.dense[rows], embedding=f.embedding[rows], first_dense=f.first_dense[rows],
                   first_embedding=f.first_embedding[rows], empty=f.empty[rows],
                   opens_with_refusal=f.opens_with_refusal[rows])
    return head.predict_proba(sub).argmax(axis=1)


def select_hyperparameters(ds: Dataset, files: Sequence[int]) -> dict[str, Any]:
    """The grid point whose worst agreement over ``files``, each held out from a head fit on the others, is best."""
    best: dict[str, Any] | None = None
    for c, cw, ew in itertools.product(GRID_C, GRID_CLASS_WEIGHT_POWER, GRID_EMBEDDING_WEIGHT):
        scores = []
        for held in files:
            train = np.flatnonzero(np.isin(ds.file_of, [f for f in files if f != held]))
            test = np.flatnonzero(ds.file_of == held)
            head = fit_head(*_training_set(ds, train), c, cw, ew)
            scores.append(float((_predict(head, ds, test) == ds.labels[test]).mean()))
        score = min(scores) + 1e-3 * float(np.mean(scores))  # ties: the better mean
        if best is None or score > best["score"]:
            best = {"C": c, "class_weight_power": cw, "embedding_weight": ew, "score": round(score, 4),
                    "inner_agreement": [round(s, 4) for s in scores]}
    assert best is not None
    return best


def _report(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    per_class = {name: (round(float(confusion[k, k] / confusion[k].sum()), 4) if confusion[k].sum() else None)
                 for k, name in enumerate(LABELS)}
    return {"agreement": round(float((y == pred).mean()), 4), "per_class": per_class,
            "confusion": confusion.tolist()}


def leave_one_file_out(data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per file: the agreement with ``final_label`` of a head trained on the other files only (hyperparameters chosen
    inside those), XSTest's string match beside it, per-class recall (ours and string match) and the confusion
    matrix (rows: human label, columns: predicted, both in ``LABELS`` order)."""
    ds = load_dataset(data_dir)
    if len(ds.files) < 3:
        raise AlignError(f"{data_dir}: leave-one-file-out needs at least 3 files (two to choose hyperparameters "
                         f"between), found {len(ds.files)}")
    table: dict[str, dict[str, Any]] = {}
    for held, name in enumerate(ds.files):
        others = [f for f in range(len(ds.files)) if f != held]
        hp = select_hyperparameters(ds, others)
        train = np.flatnonzero(ds.file_of != held)
        test = np.flatnonzero(ds.file_of == held)
        head = fit_head(*_training_set(ds, train), hp["C"], hp["class_weight_power"], hp["embedding_weight"])
        ours = _report(ds.labels[test], _predict(head, ds, test))
        sm_pred = np.array([LABELS.index(xstest_string_match(ds.responses[i])) for i in test])
        sm = _report(ds.labels[test], sm_pred)
        table[name] = {"n": int(len(test)), "agreement": ours["agreement"], "string_match": sm["agreement"],
                       "per_class": ours["per_class"], "confusion": ours["confusion"],
                       "string_match_per_class": sm["per_class"], "hyperparameters": hp}
    return table


def train(data_dir: str | Path, out: str | Path | None = None, table: dict[str, Any] | None = None) -> Head:
    """The head fit on every file (hyperparameters by leave-one-file-out among them), written to
    ``out/refusal.safetensors`` and ``out/refusal.json`` when ``out`` is given."""
    ds = load_dataset(data_dir)
    hp = select_hyperparameters(ds, list(range(len(ds.files))))
    head = fit_head(*_training_set(ds, np.arange(len(ds.labels))), hp["C"], hp["class_weight_power"],
                    hp["embedding_weight"])
    counts = {name: {label: int(((ds.file_of == i) & (ds.labels == k)).sum()) for k, label in enumerate(LABELS)}
              for i, name in enumerate(ds.files)}
    head.meta = {
        "classes": list(LABELS), "features_version": FEATURES_VERSION, "feature_names": list(FEATURE_NAMES),
        "string_match_prefixes": list(STRING_MATCH_PREFIXES),
        "encoder": {"name": ENCODER_NAME, "package": ENCODER_PACKAGE, "max_tokens": MAX_TOKENS,
                    "pooling": "mean over tokens, L2-normalised"},
        "hyperparameters": hp, "training_files": {n: {"sha256": ds.sha256[n], "labels": counts[n]} for n in ds.files},
        "retrain": "python -m align.evaluation.refusal_train --data-dir DIR --out align/evaluation/weights",
        "leave_one_file_out": table,
    }
    if out is not None:
        head.save(Path(out) / DEFAULT_WEIGHTS.name)
    return head


def markdown_table(table: dict[str, dict[str, Any]]) -> str:
    lines = ["| file | n | ours | string match | recall: full_compliance | full_refusal | partial_refusal |",
             "|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        recalls = " | ".join("-" if r["per_class"][k] is None else f"{r['per_class'][k]:.3f}" for k in LABELS)
        lines.append(f"| {name} | {r['n']} | {r['agreement']:.3f} | {r['string_match']:.3f} | {recalls} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m align.evaluation.refusal_train",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="folder of XSTest completions CSVs")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS.parent, help="folder for refusal.safetensors/json")
    args = parser.parse_args(argv)
    table = leave_one_file_out(args.data_dir)
    print(markdown_table(table))
    for name, r in table.items():
        print(f"{name}: confusion (rows human, columns ours; {', '.join(LABELS)}) {r['confusion']}; "
              f"hyperparameters {r['hyperparameters']}")
    head = train(args.data_dir, args.out, table)
    print(f"wrote {Path(args.out) / DEFAULT_WEIGHTS.name} (hyperparameters {head.meta['hyperparameters']})")


if __name__ == "__main__":
    try:
        main()
    except AlignError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
