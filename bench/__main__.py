"""Run the benchmarks: ``python -m bench [--limit N]``; writes bench/results.json, one line per entry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import rm_hh_harmless


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="train on at most N pairs (a quick run)")
    args = parser.parse_args()
    results = rm_hh_harmless.run(limit=args.limit)
    out = Path(__file__).parent / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        print(f"{r['name']}: ours={r['ours']} peer(TRL)={r['peer']} ratio={r['ratio']} [{r['unit']}]")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
