"""Reading what runs wrote: one run directory's results.jsonl by runner, and the job
directories of a Hydra multirun directory."""

import json
import re
from pathlib import Path


def load_run(run_dir: Path, prompt_ids=None) -> dict[str, list[dict]]:
    """strategy -> its records, in prompt order, from one run directory (only those of `prompt_ids`, if given:
    a run resumed with a smaller dataset.limit keeps the other prompts' records)."""
    path = run_dir / "results.jsonl"
    if not path.exists():
        raise SystemExit(f"no results.jsonl in {run_dir}: give directories written by experiments.run or experiments.bench")
    records: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if prompt_ids is not None and record["prompt_id"] not in prompt_ids:
            continue
        records.setdefault(record["strategy"], []).append(record)
    order = {r["prompt_id"]: i for i, r in enumerate(records.get("baseline", []))}
    for recs in records.values():
        recs.sort(key=lambda r: order.get(r["prompt_id"], len(order)))
    return records


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a multirun directory (Hydra's multirun/<date>/<time>/, one
    subdirectory per job named from its number), in job order, or the run directories in
    any other directory; [] for a run directory."""
    if not sweep_dir.is_dir() or (sweep_dir / "results.jsonl").exists():
        return []
    jobs = [d for d in sweep_dir.iterdir() if (d / "results.jsonl").exists()]
    return sorted(jobs, key=lambda d: (int(re.match(r"\d*", d.name).group() or -1), d.name))
