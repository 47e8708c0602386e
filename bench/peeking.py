"""Peeking benchmark: false positives and power when a test is read every day.

    python bench/peeking.py [--quick]

Simulates A/A and A/B experiments (10,000 each; --quick: 1,000, the acceptance test's size) looked
at daily for 28 days with 1,000 new users per arm per day, on conversion (5 %) and on heavy-tailed
revenue per user, and prints the share declared significant by the fixed-horizon z-test read daily,
the same test read once at day 28, and the always-valid (mixture SPRT) interval read daily; then the
sequential sample-ratio check against a daily chi-square. The baseline is the fixed-horizon test read
once, at its planned end. Pure numpy (experiments.simulation), no database; ends with one JSON line.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.simulation import peeking_simulation, sample_ratio_peeking_simulation

LIFT = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 experiments per scenario instead of 10,000")
    args = parser.parse_args()
    experiments = 1000 if args.quick else 10_000
    started = time.perf_counter()
    figures: dict[str, float | int] = {"experiments": experiments, "days": 28, "users_per_day_per_arm": 1000}

    print(f"\n{experiments:,} experiments per scenario, 28 daily looks, 1,000 new users per arm per day")
    print(f"  {'scenario':<52} {'fixed, daily':>13} {'fixed, day 28':>14} {'always-valid':>13}")
    for metric, sigma in (("conversion", None), ("revenue", 2.0)):
        for label, lift in (("A/A (false positives)", 0.0), (f"A/B +{LIFT:.0%} (power)", LIFT)):
            result = peeking_simulation(experiments=experiments, relative_lift=lift, revenue_sigma=sigma)
            name = f"{metric}{' (lognormal sigma 2)' if sigma else ' (5 %)'}, {label}"
            print(
                f"  {name:<52} {result.fixed_horizon_peeking:>13.1%} {result.fixed_horizon_final:>14.1%}"
                f" {result.always_valid:>13.1%}"
            )
            key = f"{metric}_{'aa' if lift == 0 else 'ab'}"
            figures[f"{key}_fixed_daily"] = result.fixed_horizon_peeking
            figures[f"{key}_fixed_final"] = result.fixed_horizon_final
            figures[f"{key}_always_valid"] = result.always_valid

    fair = sample_ratio_peeking_simulation(experiments=experiments, threshold=0.05)
    broken = sample_ratio_peeking_simulation(experiments=experiments, treatment_share=0.49, threshold=0.001)
    print("\nsample ratio, 2,000 users a day on a 50/50 split, read daily")
    print(
        f"  fair split, false alarms at p < 0.05:  chi-square {fair.chi_square_peeking:.1%},"
        f" sequential {fair.sequential:.1%}"
    )
    print(
        f"  49/51 split, caught at p < 0.001:     chi-square {broken.chi_square_peeking:.1%},"
        f" sequential {broken.sequential:.1%}"
    )
    figures.update(
        srm_fair_chi_square_daily=fair.chi_square_peeking,
        srm_fair_sequential=fair.sequential,
        srm_49_51_chi_square_daily=broken.chi_square_peeking,
        srm_49_51_sequential=broken.sequential,
        seconds=round(time.perf_counter() - started, 2),
    )
    print(f"\n  {figures['seconds']:.1f} s in all")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
