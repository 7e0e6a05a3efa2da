"""Run the benchmarks: ``python -m bench [--limit N]``; writes bench/results.json, one line per entry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import k_sampling, refusal_judge, reuse, rm_hh_harmless, rm_sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="train on at most N pairs (a quick run)")
    parser.add_argument("--only", choices=["rm", "k-sampling", "rm-sandbox", "refusal", "reuse"], default=None,
                        help="run one benchmark")
    args = parser.parse_args()
    results = []
    if args.only in (None, "reuse"):  # first: it builds runs/sandbox when missing, which k-sampling reads
        results += reuse.run()
    if args.only in (None, "k-sampling"):
        results += k_sampling.run(quick=args.limit is not None)
    if args.only in (None, "rm"):
        results += rm_hh_harmless.run(limit=args.limit)
    if args.only in (None, "refusal"):
        results += refusal_judge.run()
    if args.only in (None, "rm-sandbox"):  # ablations, no peer: their own file
        rm_sandbox.save(rm_sandbox.run())
        if args.only:
            return
    out = Path(__file__).parent / "results.json"
    kept = json.loads(out.read_text()) if out.is_file() and args.only else []  # --only: update those entries
    names = {r["name"] for r in results}
    out.write_text(json.dumps([r for r in kept if r["name"] not in names] + results, indent=2) + "\n")
    for r in results:
        print(f"{r['name']}: ours={r['ours']} peer={r['peer']} ratio={r['ratio']} [{r['unit']}]")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
