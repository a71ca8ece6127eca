"""The report of a Hydra multirun (`python -m experiments.report multirun/<date>/<time>`, or
any directory of run directories): every run in one table, one row per run x runner with
the swept knobs (the overrides that differ between runs) as columns and speedup against
the same run's baseline (sweep.md / sweep.csv / sweep.json), and speedup and mean accepted
tokens plotted against each knob, one line per strategy."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from experiments.run_records import job_dirs, load_run  # noqa: E402
from experiments.summary import summarize  # noqa: E402
from experiments.table import markdown  # noqa: E402

METRICS = ["n_prompts", "tokens_per_s", "speedup", "mean_accepted", "acceptance_rate", "ttft_ms", "tpot_ms",
           "match_baseline"]
PLOTTED = {"speedup": ("Speedup", "speedup over baseline"),  # metric: (title, axis label)
           "mean_accepted": ("Mean accepted", "tokens committed per target pass")}


def override_values(overrides: list[str]) -> dict:
    """`["strategy.gamma=2", "strategy=draft"]` -> `{"strategy.gamma": 2, "strategy": "draft"}`:
    values typed as YAML reads them; lists and mappings stay text, so that they compare."""
    values = {}
    for override in overrides:
        key, _, text = override.partition("=")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        values[key.lstrip("+~")] = value if value is None or isinstance(value, (bool, int, float, str)) else text
    return values


def job_settings(job: Path) -> dict:
    """The overrides a job ran with, from its run_info.json."""
    path = job / "run_info.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    if "overrides" not in info:
        raise SystemExit(f"{path} records no overrides: the run predates them; rerun it")
    return override_values(info["overrides"])


def swept(settings: list[dict]) -> list[str]:
    """The override keys whose values differ between jobs (a key some jobs lack counts)."""
    keys = sorted({key for s in settings for key in s})
    return [key for key in keys if len({repr(s.get(key)) for s in settings}) > 1]


def sweep_table(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """(one row per job x runner, the swept knobs' columns) of the multirun directory `sweep_dir`."""
    jobs = job_dirs(sweep_dir)
    if not jobs:
        raise SystemExit(f"no job directories with results.jsonl in {sweep_dir}: give a multirun directory "
                         "(multirun/<date>/<time>) written by experiments.run -m")
    runs = [load_run(job) for job in jobs]
    settings = [job_settings(job) for job in jobs]
    knobs = swept(settings)
    # a swept config group named like a column of its own (strategy=draft,eagle) gets a new name
    columns = {k: f"{k}_config" if k in ("run", "strategy", *METRICS) else k for k in knobs}
    rows = []
    for job, records, values in zip(jobs, runs, settings):
        label = ",".join(f"{k}={values.get(k)}" for k in knobs) or job.name
        for strategy, recs in records.items():
            summary = summarize(recs, records.get("baseline"))
            rows.append({"run": label, **{columns[k]: values.get(k) for k in knobs}, "strategy": strategy,
                         **{m: summary[m] for m in METRICS}})
    return pd.DataFrame(rows, columns=["run", *columns.values(), "strategy", *METRICS]), list(columns.values())


def plot_against(table: pd.DataFrame, knob: str, metric: str, knobs: list[str], path: Path) -> Path:
    """`metric` against `knob`, one line per strategy (and per value of the other knobs)."""
    shown = table[(table["strategy"] != "baseline") & table[metric].notna()]
    numeric = pd.api.types.is_numeric_dtype(shown[knob]) and not pd.api.types.is_bool_dtype(shown[knob])
    others = [k for k in knobs if k != knob]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, line in shown.groupby(["strategy", *others], dropna=False, sort=False):
        line = line.sort_values(knob) if numeric else line
        label = ", ".join([key[0], *(f"{k}={v}" for k, v in zip(others, key[1:]))])
        ax.plot(line[knob] if numeric else line[knob].astype(str), line[metric], marker="o", label=label)
    if pd.api.types.is_integer_dtype(shown[knob]):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)  # the baseline
    title, axis = PLOTTED[metric]
    ax.set(xlabel=knob, ylabel=axis, title=f"{title} against {knob}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_sweep_report(sweep_dir: Path, out: Path) -> pd.DataFrame:
    """sweep.md / sweep.csv / sweep.json and speedup_vs_<knob>.png, mean_accepted_vs_<knob>.png
    for every swept knob, into `out`."""
    table, knobs = sweep_table(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "sweep.csv", index=False)
    table.to_json(out / "sweep.json", orient="records", indent=2)
    (out / "sweep.md").write_text(markdown(rows_of(table), list(table.columns)))
    for knob in knobs:
        for metric in PLOTTED:
            plot_against(table, knob, metric, knobs, out / f"{metric}_vs_{knob.replace('/', '_')}.png")
    return table


def rows_of(table: pd.DataFrame) -> list[dict]:
    """The table's rows as plain dicts, None where pandas holds NaN."""
    return table.astype(object).where(table.notna(), None).to_dict("records")
