"""The summary as a fixed-width table for the terminal, and rows as a Markdown table."""

from experiments.summary import strategy_entries


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_summary(summary: dict) -> str:
    header = ["strategy", "prompts", "tokens", "tok/s", "speedup", "per-prompt [p25, p75]",
              "mean acc", "acc rate", "TTFT ms", "TPOT ms", "match", "hit rate"]
    rows = []
    for name, s in strategy_entries(summary).items():
        spread = s.get("speedup_per_prompt")
        rows.append([
            name, str(s["n_prompts"]), str(s["new_tokens"]), _fmt(s["tokens_per_s"], ".2f"),
            _fmt(s["speedup"], ".3f"),
            "-" if spread is None else f"{spread['median']:.2f} [{spread['p25']:.2f}, {spread['p75']:.2f}]",
            _fmt(s["mean_accepted"], ".2f"), _fmt(s["acceptance_rate"], ".3f"),
            _fmt(s["ttft_ms"], ".1f"), _fmt(s["tpot_ms"], ".1f"), _fmt(s["match_baseline"], ".2f"),
            _fmt(s["hit_rate"], ".3f"),
        ])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: list[dict], columns: list[str], formats: dict[str, str] | None = None) -> str:
    """A Markdown table of `rows`' `columns`: floats by their column's format in `formats`
    (default .3f), None as "-"."""
    def cell(column: str, value) -> str:
        if value is None:
            return "-"
        return format(value, (formats or {}).get(column, ".3f")) if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
