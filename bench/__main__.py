"""Run the benchmarks: ``python -m bench [--only NAME ...] [--quick]``; writes bench/results.json (DESIGN.md
section 9: ``{name, ours, peer, ratio, unit, config}``, ``ratio`` above 1 when we are better) and prints
one line per entry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# run in this order: reuse builds runs/sandbox when missing, which the sandbox benchmarks read
BENCHMARKS = ["reuse", "k-sampling", "rm-train", "rl-step", "sft-flops", "rm-real", "refusal", "demo", "rm-sandbox"]


def _run(name: str, quick: bool, limit: int | None, run_dir: Path) -> list[dict]:
    from bench import (demo_seconds, k_sampling, refusal_judge, reuse, rl_step, rm_real_hh_harmless, rm_sandbox,
                       rm_train, sft_flops)

    if name == "reuse":
        return reuse.run(run_dir=run_dir)
    if name == "k-sampling":
        return k_sampling.run(quick=quick, run_dir=run_dir)
    if name == "rm-train":
        return rm_train.run(quick=quick, run_dir=run_dir)
    if name == "rl-step":
        return rl_step.run(quick=quick, run_dir=run_dir)
    if name == "sft-flops":
        return sft_flops.run(quick=quick, run_dir=run_dir)
    if name == "rm-real":
        return rm_real_hh_harmless.run(limit=limit or (200 if quick else None))
    if name == "refusal":
        return refusal_judge.run()
    if name == "demo":
        return demo_seconds.run()
    rm_sandbox.save(rm_sandbox.run())  # ablations, no peer: their own file
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=BENCHMARKS, nargs="+", default=None, help="run these benchmarks only "
                        "(their entries in results.json are replaced, the others kept)")
    parser.add_argument("--skip", choices=BENCHMARKS, nargs="+", default=[], help="run all but these")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run, not a measurement")
    parser.add_argument("--limit", type=int, default=None, help="rm-real: train on at most N pairs")
    parser.add_argument("--run-dir", type=Path, default=Path(__file__).parent.parent / "runs" / "sandbox",
                        help="the sandbox run the sandbox benchmarks read (reuse builds it when missing)")
    args = parser.parse_args()
    chosen = [b for b in (args.only or BENCHMARKS) if b not in args.skip]
    out = Path(__file__).parent / "results.json"
    results: list[dict] = json.loads(out.read_text()) if out.is_file() and args.only else []
    for name in chosen:
        got = _run(name, args.quick, args.limit, args.run_dir)
        names = {r["name"] for r in got}
        results = [r for r in results if r["name"] not in names] + got
        out.write_text(json.dumps(results, indent=2) + "\n")  # after each benchmark: a long run keeps what it has
        for r in got:
            print(f"{r['name']}: ours={r['ours']} peer={r['peer']} ratio={r['ratio']} [{r['unit']}]", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
