"""The batch sweep's table and plots (experiments.batch_sweep): one row per (strategy, batch
size) from the timed generate_batch calls, batch.json / batch.md, crossover.json,
throughput_vs_batch.png and speedup_vs_batch.png. docs/design.md defines every field."""

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.batch_cost_model import crossover_batch_size  # noqa: E402
from experiments.sweep_report import rows_of  # noqa: E402
from experiments.table import markdown  # noqa: E402
from specdec.io import atomic_write_text  # noqa: E402

PLOTTED = {"throughput_tok_s": ("Throughput", "new tokens per second", "throughput_vs_batch.png"),
           "speedup": ("Speedup", "speedup over baseline", "speedup_vs_batch.png")}  # metric: (title, axis, file)
COLUMNS = ["strategy", "batch_size", "throughput_tok_s", "tpot_ms", "ttft_ms", "mean_accepted", "speedup",
           "speedup_spread", "predicted_speedup", "match_single", "repeats"]


def batch_rows(calls: list[dict], predictions: dict[tuple[str, int], float], greedy: bool) -> list[dict]:
    """One row per (strategy, batch size) of `calls` (each {strategy, batch_size, repeat, wall_s,
    records}: one timed generate_batch call and its per-request records), in the order they ran.
    `predictions` maps (strategy, batch size) to the cost model's speedup."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for call in calls:
        runs.setdefault((call["strategy"], call["batch_size"]), []).append(call)
    throughput = {key: [tokens(c) / c["wall_s"] for c in sorted(group, key=lambda c: c["repeat"])]
                  for key, group in runs.items()}
    single = {s: [r["token_ids"] for r in group[0]["records"]] for (s, b), group in runs.items() if b == 1}
    rows = []
    for (strategy, batch), group in runs.items():
        ratios = [t / b for t, b in zip(throughput[strategy, batch], throughput["baseline", batch])]
        records = [r for call in group for r in call["records"]]
        tpots = [r["tpot_ms"] for r in records if r["tpot_ms"] is not None]
        rows.append({
            "strategy": strategy, "batch_size": batch,
            "throughput_tok_s": statistics.median(throughput[strategy, batch]),
            "tpot_ms": statistics.median(tpots) if tpots else None,
            "ttft_ms": statistics.median(r["ttft_ms"] for r in records),
            "mean_accepted": sum(r["new_tokens"] for r in records) / sum(r["target_forwards"] for r in records),
            "speedup": statistics.median(ratios), "speedup_spread": [min(ratios), max(ratios)],
            "predicted_speedup": predictions.get((strategy, batch)),
            "match_single": match(single.get(strategy), group) if greedy else None,
            "repeats": len(group), "wall_s": [c["wall_s"] for c in group],
        })
    return rows


def tokens(call: dict) -> int:
    return sum(r["new_tokens"] for r in call["records"])


def match(single: list[list[int]] | None, group: list[dict]) -> float | None:
    """Share of the (prompt, repeat) outputs equal to the batch-1 run's first repeat (None without one)."""
    if single is None:
        return None
    outputs = [(r["token_ids"], s) for call in group for r, s in zip(call["records"], single)]
    return sum(mine == theirs for mine, theirs in outputs) / len(outputs)


def crossovers(rows: list[dict]) -> dict[str, dict]:
    """strategy -> the crossover batch size, measured and predicted (None: none of the sizes run)."""
    by_strategy: dict[str, list[dict]] = {}
    for row in rows:
        if row["strategy"] != "baseline":
            by_strategy.setdefault(row["strategy"], []).append(row)
    predicted = {s: {r["batch_size"]: r["predicted_speedup"] for r in rs if r["predicted_speedup"] is not None}
                 for s, rs in by_strategy.items()}
    return {s: {"measured": crossover_batch_size({r["batch_size"]: r["speedup"] for r in rs}),
                "predicted": crossover_batch_size(predicted[s]) if predicted[s] else None}
            for s, rs in by_strategy.items()}


def plot(table: pd.DataFrame, metric: str, out: Path) -> Path:
    """`metric` against the batch size (log2 axis), one line per strategy; for speedup, the
    spread over repeats as error bars, the cost model's prediction dashed and 1.0 marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, line in table.groupby("strategy", sort=False):
        if metric == "speedup":
            low, high = zip(*line["speedup_spread"])
            drawn = ax.errorbar(line["batch_size"], line[metric], yerr=[line[metric] - low, high - line[metric]],
                                marker="o", capsize=3, label=strategy)
            predicted = line[line["predicted_speedup"].notna()]
            if strategy != "baseline" and len(predicted):
                ax.plot(predicted["batch_size"], predicted["predicted_speedup"], linestyle="--",
                        color=drawn.lines[0].get_color(), label=f"{strategy} (predicted)")
        else:
            ax.plot(line["batch_size"], line[metric], marker="o", label=strategy)
    if metric == "speedup":
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    sizes = sorted(table["batch_size"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    title, axis, name = PLOTTED[metric]
    ax.set(xlabel="batch size (rows decoded at once)", ylabel=axis, title=f"{title} against batch size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    return out / name


def write_batch_report(rows: list[dict], costs: dict, out: Path) -> str:
    """batch.json, batch.md, crossover.json (with the measured verify costs) and the two plots
    into `out`; returns the Markdown table."""
    table = pd.DataFrame(rows)
    shown = table.assign(speedup_spread=[f"[{low:.3f}, {high:.3f}]" for low, high in table["speedup_spread"]])
    text = markdown(rows_of(shown[COLUMNS]), COLUMNS, {"throughput_tok_s": ".2f", "tpot_ms": ".1f", "ttft_ms": ".1f"})
    atomic_write_text(out / "batch.json", json.dumps(rows, indent=2))
    atomic_write_text(out / "batch.md", text)
    atomic_write_text(out / "crossover.json", json.dumps({"crossover_batch_size": crossovers(rows), **costs}, indent=2))
    for metric in PLOTTED:
        plot(table, metric, out)
    return text
