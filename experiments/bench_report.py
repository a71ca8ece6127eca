"""The bench table (Markdown, CSV, JSON) and plots from the results.jsonl of run directories
(experiments.run or experiments.bench; `python -m experiments.report RUN_DIR...`).

Rows are strategy x category, plus category "all" for the whole suite; speedup is against
the baseline of the same run on the same prompts. Plots: speedup against gamma,
per-position acceptance, and a histogram of tokens committed per target pass.
"""

import csv
import io
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from specdec.io import atomic_write_text  # noqa: E402
from experiments.run_records import load_run  # noqa: E402
from experiments.summary import summarize  # noqa: E402
from experiments.table import markdown  # noqa: E402

COLUMNS = ["run", "strategy", "category", "n_prompts", "tokens_per_s", "speedup", "mean_accepted", "acceptance_rate",
           "ttft_ms", "tpot_ms", "match_baseline", "predicted_speedup"]


def bench_rows(run: str, records: dict[str, list[dict]], predictions: dict | None = None) -> list[dict]:
    baseline = records.get("baseline")
    rows = []
    for strategy, recs in records.items():
        categories = ["all"] + sorted({r["category"] for r in recs})
        for category in categories:
            mine = [r for r in recs if category in ("all", r["category"])]
            base = None if baseline is None else [r for r in baseline if category in ("all", r["category"])]
            summary = summarize(mine, base)
            rows.append({"run": run, "strategy": strategy, "category": category, **{k: summary.get(k) for k in COLUMNS[3:-1]},
                         "per_position_acceptance": summary["per_position_acceptance"],
                         "predicted_speedup": (predictions or {}).get(strategy) if category == "all" else None})
    return rows


def tokens_per_step(recs: list[dict]) -> list[int]:
    return [a + 1 for r in recs for a in r["accepted_per_step"]]


def gamma_of(label: str) -> int | None:
    found = re.search(r"gamma=(\d+)", label)
    return int(found.group(1)) if found else None


def plot(rows: list[dict], records: dict[str, list[dict]], out: Path) -> list[Path]:
    """speedup_vs_gamma.png, per_position_acceptance.png, tokens_per_step.png into `out`."""
    everything = [r for r in rows if r["category"] == "all"]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    families: dict[str, list[tuple[int, float]]] = {}
    for row in everything:
        gamma = gamma_of(row["strategy"])
        if gamma is not None and row["speedup"] is not None:
            families.setdefault(_label(row["run"], row["strategy"].split("(")[0]), []).append((gamma, row["speedup"]))
    for family, points in sorted(families.items()):
        ax.plot(*zip(*sorted(points)), marker="o", label=family)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="gamma (draft tokens per step)", ylabel="speedup over baseline", title="Speedup against gamma")
    if families:
        ax.legend(fontsize=7)
    paths.append(_save(fig, out / "speedup_vs_gamma.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in everything:
        if row["per_position_acceptance"]:
            acc = row["per_position_acceptance"]
            ax.plot(range(1, len(acc) + 1), acc, marker="o", label=_label(row["run"], row["strategy"]))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="draft position (trees: depth)", ylabel="P(accepted | previous accepted)", title="Per-position acceptance", ylim=(0, 1))
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "per_position_acceptance.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    counts = {name: tokens_per_step(recs) for name, recs in records.items() if name != "baseline"}
    counts = {name: c for name, c in counts.items() if c}  # anchors record no steps
    if counts:
        top = max(max(c) for c in counts.values())
        ax.hist(list(counts.values()), bins=range(1, top + 2), density=True, label=list(counts), align="left")
        ax.legend(fontsize=7)
    ax.set(xlabel="tokens committed per target pass", ylabel="share of steps", title="Tokens per step")
    paths.append(_save(fig, out / "tokens_per_step.png"))
    return paths


def _label(run: str, strategy: str) -> str:
    return f"{run}: {strategy}" if run else strategy


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(run_dirs: list[Path], out: Path, prompt_ids=None) -> list[dict]:
    """bench.json / bench.md / bench.csv and the plots for `run_dirs` (their records of `prompt_ids`, if
    given), into `out`; a process stopped while writing leaves the former tables, never torn ones."""
    out.mkdir(parents=True, exist_ok=True)
    rows, all_records = [], {}
    for run_dir in run_dirs:
        records = load_run(run_dir, prompt_ids)
        costs_path = run_dir / "cost_model.json"
        predictions = json.loads(costs_path.read_text())["predicted_speedup"] if costs_path.exists() else None
        name = run_dir.name if len(run_dirs) > 1 else ""
        rows += bench_rows(name, records, predictions)
        all_records.update({f"{name}: {k}" if name else k: v for k, v in records.items()})
    atomic_write_text(out / "bench.json", json.dumps(rows, indent=2))
    atomic_write_text(out / "bench.md", markdown(rows, COLUMNS))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "bench.csv", table.getvalue())
    plot(rows, all_records, out)
    return rows


def overall_table(rows: list[dict]) -> str:
    """The Markdown table of the rows for the whole suite (category "all")."""
    return markdown([r for r in rows if r["category"] == "all"], COLUMNS)
