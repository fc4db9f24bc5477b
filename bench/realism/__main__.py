"""``python -m bench.realism``: see the package's docstring for what it measures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.realism import __doc__ as DOC
from bench.realism.figures import REAL
from bench.realism.report import DEFAULT_START, ROOT, report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.realism", description=DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default="builtin,helsinki,kotka")
    p.add_argument("--vehicles", type=int, default=50)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--start-time", default=DEFAULT_START)
    p.add_argument("--long-hours", type=float, default=4.0,
                   help="length of one extra run for the refuelling rows (0: none)")
    p.add_argument("--long-vehicles", type=int, default=20)
    p.add_argument("--producer-root", type=Path, default=ROOT,
                   help="checkout whose producer runs (default: this one)")
    args = p.parse_args(argv)
    print(f"Realism report: {args.vehicles} vehicles, {args.minutes:g} min at 1 Hz from "
          f"{args.start_time}, seeds {args.seed}..{args.seed + args.runs - 1}, producer "
          f"{args.producer_root.resolve()}\n")
    report([n.strip() for n in args.networks.split(",") if n.strip()], vehicles=args.vehicles,
           minutes=args.minutes, seed=args.seed, runs=args.runs, start=args.start_time,
           producer_root=args.producer_root.resolve(), long_hours=args.long_hours,
           long_vehicles=args.long_vehicles)
    print("Real-world figures, their sources:")
    for key, (fig, src) in REAL.items():
        print(f"- {key}: {fig}: {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
