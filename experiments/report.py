"""`python -m experiments.report`: tables and plots from what runs wrote, and the results doc.

  python -m experiments.report RUN_DIR... [--out DIR]    the bench table and plots of run directories
  python -m experiments.report MULTIRUN_DIR [--out DIR]  every job of a multirun (or run of a directory of runs)
                                                         in one table, speedup and mean accepted against each knob
  python -m experiments.report --results-doc             docs/results.md from the directories under results/
  python -m experiments.report --headline results/NAME   the README's headline table from one of them
"""

import argparse
from pathlib import Path

from experiments.bench_report import overall_table, write_report
from experiments.results_doc import headline, results_doc
from experiments.run_records import job_dirs
from experiments.sweep_report import rows_of, write_sweep_report
from experiments.table import markdown

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories, or one directory of them (a multirun)")
    parser.add_argument("--out", type=Path, help="where to write the table and plots (default: the first directory)")
    parser.add_argument("--results-doc", action="store_true", help="write the results doc from the result directories")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the result directories (default: results/)")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "results.md", help="the results doc (default: docs/results.md)")
    parser.add_argument("--headline", type=Path, metavar="RESULT_DIR", help="print the headline table of a result directory")
    args = parser.parse_args(argv)
    if bool(args.run_dirs) + args.results_doc + (args.headline is not None) != 1:
        parser.error("give run directories, one multirun directory, --results-doc or --headline RESULT_DIR")
    if args.results_doc:
        args.doc.write_text(results_doc(args.results, args.doc))
        print(f"wrote {args.doc}")
    elif args.headline is not None:
        print(headline(args.headline), end="")
    elif any(job_dirs(d) for d in args.run_dirs):
        if len(args.run_dirs) > 1:
            parser.error("give one multirun directory at a time")
        table = write_sweep_report(args.run_dirs[0], args.out or args.run_dirs[0])
        print(markdown(rows_of(table), list(table.columns)), end="")
    else:
        print(overall_table(write_report(args.run_dirs, args.out or args.run_dirs[0])), end="")


if __name__ == "__main__":
    main()
