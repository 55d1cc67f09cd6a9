"""The loop's plots: gold reward against KL to the base for each method (one point per round's candidate;
filled = deployed, hollow = not deployed: rejected or undecided), and the reward model's proxy gain next to the gold
gain against KL (Gao et al. 2022: over-optimisation is the proxy still rising while the gold falls).

Results are the JSON files ``simulation.cli`` writes (one per oracle and method, the latest run of
each); ``results_dir/latest.png`` is what the Dashboard shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

METHOD_COLORS = {"dpo": "tab:blue", "kto": "tab:orange", "rl": "tab:green", "best_of_n": "tab:red"}
# A variant (``dpo-beta0.05``, ``kto-ptx0``: simulation.rounds.method_label) gets one of these, in the order drawn.
VARIANT_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "black")


def curve(result: dict[str, Any]) -> list[dict[str, Any]]:
    """(round, kl, gold, gold gain, proxy gain, deployed) points, round 0 = the base."""
    base = result["base"]
    points = [
        {"round": 0, "kl": 0.0, "gold": base["gold"], "gold_gain": 0.0, "proxy_gain": 0.0, "deployed": True}
    ]
    for r in result.get("rounds", []):
        m = r.get("candidate")
        if not m:
            continue
        points.append(
            {
                "round": r["round"],
                "kl": m["kl"],
                "gold": m["gold"],
                "gold_gain": m["gold"] - base["gold"],
                "proxy_gain": m.get("proxy_gain"),
                "deployed": r.get("decision") == "deployed",
            }
        )
    return points


def load_results(results_dir: Path, oracle: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted((results_dir / "results").glob(f"{oracle}-*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a half-written file of a run still going: skip it
        if isinstance(result, dict) and "base" in result:  # not a --seeds pooled summary (no rounds to draw)
            out.append(result)
    return out


def align_zero(a, b) -> None:
    """Give two y-axes (a twinx pair) limits that put their zeros at the same height, data kept in view."""
    lims = []
    for ax in (a, b):
        lo, hi = ax.get_ylim()
        lims.append((min(lo, 0.0), max(hi, 0.0)))
    f = max(-lo / (hi - lo) if hi > lo else 0.0 for lo, hi in lims)  # zero's height as a fraction
    if not 0.0 < f < 1.0:  # an axis with nothing above (or below) zero: leave both as they are
        return
    for ax, (lo, hi) in zip((a, b), lims, strict=True):
        ax.set_ylim(min(lo, -f * hi / (1 - f)), hi)


def loop_figure(results: Sequence[dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    gold_ax, proxy_ax = fig.subplots(1, 2)
    gain_ax = proxy_ax.twinx()
    oracle = results[0]["oracle"] if results else "?"
    variants = iter(VARIANT_COLORS * (1 + len(results) // len(VARIANT_COLORS)))
    for result in results:
        method = result.get("label", result["method"])
        color = METHOD_COLORS.get(method) or next(variants)
        pts = curve(result)
        xs = [p["kl"] for p in pts]
        gold_ax.plot(xs, [p["gold"] for p in pts], "-", color=color, alpha=0.6, label=method)
        for p in pts:
            gold_ax.plot(p["kl"], p["gold"], "o", color=color, mfc=color if p["deployed"] else "white")
            gold_ax.annotate(
                str(p["round"]), (p["kl"], p["gold"]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
        with_proxy = [p for p in pts if p["proxy_gain"] is not None]
        proxy_ax.plot(
            [p["kl"] for p in with_proxy],
            [p["proxy_gain"] for p in with_proxy],
            "-o",
            color=color,
            label=f"{method} proxy",
        )
        gain_ax.plot(xs, [p["gold_gain"] for p in pts], "--s", color=color, alpha=0.7, label=f"{method} gold")
    if results:
        gold_ax.axhline(results[0]["base"]["gold"], color="gray", linewidth=0.8, linestyle=":")
    gold_ax.set_xlabel("KL(policy || base), nats per reply")
    gold_ax.set_ylabel(f"gold reward ({oracle})")
    gold_ax.set_title("Gold reward against KL (numbers: rounds; hollow: not deployed)")
    gold_ax.legend(fontsize="small")
    proxy_ax.set_xlabel("KL(policy || base), nats per reply")
    proxy_ax.set_ylabel("proxy gain: reward-model score above the base")
    gain_ax.set_ylabel("gold gain above the base (dashed)")
    proxy_ax.axhline(0, color="gray", linewidth=0.8, linestyle=":")
    align_zero(proxy_ax, gain_ax)
    proxy_ax.set_title("Proxy (reward model) vs gold")
    handles = proxy_ax.get_legend_handles_labels()[0] + gain_ax.get_legend_handles_labels()[0]
    labels = proxy_ax.get_legend_handles_labels()[1] + gain_ax.get_legend_handles_labels()[1]
    if handles:
        proxy_ax.legend(handles, labels, fontsize="small", loc="upper left")
    return fig


def save_figure(results: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    loop_figure(results).savefig(tmp, dpi=110)
    tmp.replace(path)  # the Dashboard never reads a half-written image
    return path
