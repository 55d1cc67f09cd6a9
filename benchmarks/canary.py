"""The canary rule's error rates, measured by simulation: how often it deploys, rejects or runs out of
votes when the users prefer the candidate with a known probability, the tally looked at after every
vote as the product does (``feedback_store.canary``).

    python -m benchmarks.canary                  # 2,000 simulated canaries per row, a 200-vote budget
    python -m benchmarks.canary --votes 100      # another vote budget
    python -m benchmarks.canary --quick          # 200 canaries per row (a smoke run)

Each row: the users prefer the candidate with probability p (ties left out); the share of canaries
deployed, rejected and left to the offline gate (budget spent), and the median votes a decision took.
The last row looks at an ordinary 95% Wilson interval after every vote instead, at p = 0.5: why the
product needs an anytime-valid one. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import cache
from statistics import median

import numpy as np

from benchmarks import quick
from feedback_store.canary import anytime_interval
from feedback_store.stats import wilson_interval

Rule = Callable[[int, int], "str | None"]
PREFERENCES = (0.3, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


@cache
def _anytime(wins: int, losses: int, alpha: float) -> tuple[float, float]:
    return anytime_interval(wins, losses, alpha)


def anytime_rule(alpha: float = 0.05) -> Rule:
    """The product's rule: deploy above 0.5 with confidence, reject below, else keep collecting."""

    def rule(wins: int, losses: int) -> str | None:
        low, high = _anytime(wins, losses, alpha)
        return "deploy" if low > 0.5 else "reject" if high < 0.5 else None

    return rule


def wilson_rule(wins: int, losses: int) -> str | None:
    low, high = wilson_interval(wins, wins + losses)
    return "deploy" if low > 0.5 else "reject" if high < 0.5 else None


def simulate(p: float, rule: Rule, trials: int = 2000, budget: int = 200, seed: int = 0) -> dict[str, float]:
    """Shares of ``trials`` canaries that deploy / reject / spend the ``budget`` of decisive votes when
    each vote goes to the candidate with probability ``p``, and the median votes of a decision."""
    rng = np.random.default_rng(seed)
    out = {"deploy": 0, "reject": 0, "budget": 0}
    votes: list[int] = []
    for wins_at in np.cumsum(rng.random((trials, budget)) < p, axis=1):
        for n, wins in enumerate(wins_at, start=1):
            verdict = rule(int(wins), n - int(wins))
            if verdict:
                out[verdict] += 1
                votes.append(n)
                break
        else:
            out["budget"] += 1
    shares: dict[str, float] = {k: v / trials for k, v in out.items()}
    shares["median_votes"] = float(median(votes)) if votes else float("nan")
    return shares


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.canary", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=2000, help="simulated canaries per row")
    p.add_argument("--votes", type=int, default=200, help="the vote budget (the product's --canary-votes)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - the confidence (the product's 0.95)")
    quick.add_quick_flag(p)
    args = p.parse_args(argv)
    applied = quick.apply_quick(p, args, {"trials": 200}, argv)
    quick.announce(applied, args.quick)
    rule = anytime_rule(args.alpha)
    print(f"{args.trials} simulated canaries per row, budget {args.votes} decisive votes, alpha {args.alpha}")
    print(f"{'users prefer':>12} {'deployed':>9} {'rejected':>9} {'budget':>7} {'median votes':>13}")
    rows = {}
    for pref in PREFERENCES:
        r = simulate(pref, rule, args.trials, args.votes)
        rows[str(pref)] = {k: round(v, 4) for k, v in r.items()}
        print(
            f"{pref:>12.2f} {r['deploy']:>9.1%} {r['reject']:>9.1%} {r['budget']:>7.1%} "
            f"{r['median_votes']:>13.0f}"
        )
    naive = simulate(0.5, wilson_rule, max(50, args.trials // 4), args.votes)
    wrong = naive["deploy"] + naive["reject"]
    print(f"Wilson interval looked at after every vote, p = 0.50: decides by chance in {wrong:.1%}")
    quick.announce(applied, args.quick)
    print(json.dumps({"budget": args.votes, "alpha": args.alpha, "rows": rows, "wilson_peeking_null": wrong}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
