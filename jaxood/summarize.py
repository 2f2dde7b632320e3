"""Several runs' reports in one table: the few-shot and ablation tables of the papers, from their runs.

    python -m jaxood.summarize runs/pets runs/dtd runs/eurosat [--rows="SOT-GLP / GL-MCM"] [--out=summary.md]

Each run is a workdir that holds a `results.json` (`jaxood.train` and `jaxood.evaluate` write it), or a file of its
report (`runs/*/results.json`). The summary has

- ID accuracy (%): a row per run and a column per method (SOT-GLP, zero-shot, ...), then their mean over the
  runs and their sample standard deviation ("SD", n - 1): SOT-GLP's Table 1 is a run per dataset and their
  average; the seeds of one setting are runs too (DOT-OOD reports "mean ± std" over three runs).
- FPR95 / AUROC (%): a row per run and score row (`--rows`, comma-separated; all by default), a column per OOD
  set (those of every run, in the order first met) and each run's average over its own sets, as its report has
  it; then, for a score row that several runs have, its mean and SD over them. A set a run did not score is "-";
  the SD of one run's value is "n/a".
- Which run was evaluated at which training step, by which code (`results.md`'s "Computed by"), so runs
  computed by different code are seen to be.

A workdir without a readable report is named, all of them in one error, before anything is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from jaxood.cache import OUT_KEPT, write_out
from jaxood.errors import InputMissing, InvalidInput, agreeing, exit_with, report_user_errors
from jaxood.report import RESULTS_JSON, code_name, pct, written_in
from jaxood.run_folders import run_holding


def read_reports(runs: list[str]) -> dict[str, dict]:
    """Each run's `results.json`, by the run as given (a report's file for its run's folder: `runs/*/results.json`, as
    a shell's glob gives); every run without a readable one is named in one error."""
    runs = [written_in(run) or run for run in runs]
    reports, problems = {}, []
    real = [os.path.realpath(os.path.expanduser(run)) for run in runs]
    if twice := [run for i, run in enumerate(runs) if real[i] in real[:i]]:
        raise InvalidInput(
            f"{', '.join(twice)}: given twice (the same folder as an earlier run), which would count it twice in "
            "the means: give each run once"
        )
    for run in runs:
        path = os.path.join(os.path.expanduser(run), RESULTS_JSON)
        if not os.path.isfile(path):
            what = "does not exist" if not os.path.exists(os.path.expanduser(run)) else f"has no {RESULTS_JSON}"
            if holder := run_holding(run):  # a run's checkpoints, given for the run
                what += f" (it is in the checkpoints of the run in {holder}: give {holder})"
            problems.append(f"{run} {what}")
            continue
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            if not isinstance(report, dict) or not all(isinstance(report.get(k), dict) for k in ("ood", "counts")):
                raise ValueError("not a jaxood report: no 'ood' and 'counts' tables")
        except ValueError as err:
            problems.append(f"{path} cannot be read as a report ({err})")
            continue
        reports[run] = report
    if problems:
        without = f"{len(problems)} of the {len(runs)} runs {agreeing(len(problems), 'has', 'have')}"
        raise InputMissing(
            f"{'the run has' if len(runs) == 1 else without} no report to summarise: " + "; ".join(problems) + ". A "
            f"run's report is its workdir's {RESULTS_JSON}, which jaxood.train writes as its run ends (its same "
            "command again finishes a run that stopped) and jaxood.evaluate as it ends"
        )
    return reports


def _first_seen(lists) -> list[str]:
    return list(dict.fromkeys(item for items in lists for item in items))


NOT_SCORED = "-"  # a set the run did not score, a method it did not report


def _cell(value) -> str:
    """A metric or accuracy in %, as the reports write them; "n/a" where the run had none, "-" where it had no such
    set or method."""
    if value == NOT_SCORED:
        return NOT_SCORED
    return "n/a" if value is None else pct(value)


# The rows under each table's runs: the runs' mean, and their sample standard deviation (n - 1; none of one run)
STATISTICS = (
    ("Mean", lambda known: float(np.mean(known))),
    ("SD", lambda known: float(np.std(known, ddof=1)) if len(known) > 1 else None),
)


def _over_runs(statistic, values: list, n_runs: int) -> str:
    """`statistic` of the runs' values that are numbers, saying over how many where that is fewer than `n_runs`; with
    none, "n/a" where a run had no metric, else "-"."""
    known = [v for v in values if v is not None and v != NOT_SCORED]
    if not known:
        return "n/a" if None in values else NOT_SCORED
    of = f" ({len(known)} of {n_runs} runs)" if len(known) < n_runs else ""
    return f"{_cell(statistic(known))}{of}"


def _statistics_rows(before: list[str], columns: list[list]) -> list[str]:
    """A row per `STATISTICS` over the runs, with the cells `before` ahead of the statistics; `columns` holds each
    column's value of every run."""
    n_runs = len(columns[0])
    return [
        "| " + " | ".join([f"{name} of {n_runs} runs", *before, *(_over_runs(stat, c, n_runs) for c in columns)]) + " |"
        for name, stat in STATISTICS
    ]


def accuracy_table(reports: dict[str, dict]) -> list[str]:
    methods = _first_seen((r.get("id_accuracy") or {}) for r in reports.values())
    if not methods:
        return ["No run reports an ID accuracy."]
    lines = ["ID accuracy (%)", "", "| Run | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    values = {run: [(r.get("id_accuracy") or {}).get(m, NOT_SCORED) for m in methods] for run, r in reports.items()}
    lines += [f"| {run} | " + " | ".join(map(_cell, row)) + " |" for run, row in values.items()]
    if len(reports) > 1:
        lines += _statistics_rows([], [[row[i] for row in values.values()] for i in range(len(methods))])
    return lines


def ood_table(reports: dict[str, dict], rows: list[str] | None) -> list[str]:
    present = _first_seen(r["ood"] for r in reports.values())
    if rows is None:
        rows = present
    elif not rows:  # "No run scored an OOD set", said of runs that had
        raise InvalidInput(
            "--rows names no score row (empty: a shell variable that is not set?): leave it out for all, or name "
            f"some of the runs' score rows, comma-separated: {', '.join(map(repr, present))}"
        )
    elif unknown := [row for row in rows if row not in present]:
        raise InvalidInput(
            f"--rows names {', '.join(map(repr, unknown))}, which no run has: the runs' score rows are "
            f"{', '.join(map(repr, present))}"
        )
    sets = _first_seen([s for s in r["counts"] if s != "id"] for r in reports.values())
    if not sets or not rows:
        return ["No run scored an OOD set."]
    columns = [*sets, "Avg"]
    lines = [
        "FPR95 (%) lower is better / AUROC (%) higher is better",
        "",
        "| Run | Score | " + " | ".join(f"{c} FPR95 | {c} AUROC" for c in columns) + " |",
        "|---|---|" + "---|---|" * len(columns),
    ]
    by_row: dict[str, list[list]] = {row: [] for row in rows}  # each run's cells, FPR95 and AUROC per column
    for run, r in reports.items():
        for row in (row for row in rows if row in r["ood"]):
            metrics = [r["ood"][row].get("mean" if c == "Avg" else c, NOT_SCORED) for c in columns]
            cells = [m if m in (None, NOT_SCORED) else m[k] for m in metrics for k in ("fpr95", "auroc")]
            by_row[row].append(cells)
            lines.append(f"| {run} | {row} | " + " | ".join(map(_cell, cells)) + " |")
    for row, runs in by_row.items():
        if len(runs) > 1:
            lines += _statistics_rows([row], [[cells[i] for cells in runs] for i in range(2 * len(columns))])
    return lines


def provenance(reports: dict[str, dict]) -> list[str]:
    lines = ["Runs:", ""]
    for run, r in reports.items():
        step = f"training step {r['step']}, " if "step" in r else ""
        model = (r.get("config") or {}).get("model", "a model not recorded")
        lines.append(f"- {run}: {step}{model}; computed by jaxood at {code_name(r.get('source'))}")
    if len({json.dumps(r.get("source"), sort_keys=True) for r in reports.values()}) > 1:
        lines += ["", "The runs were computed by different code (above)."]
    return lines


def summary(runs: list[str], rows: list[str] | None = None) -> str:
    """The markdown summary of the runs' reports (module docstring)."""
    reports = read_reports(runs)
    return "\n".join([*accuracy_table(reports), "", *ood_table(reports, rows), "", *provenance(reports)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m jaxood.summarize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", metavar="RUN", help="a workdir with a results.json, or that file")
    ap.add_argument("--rows", help="the score rows to show, comma-separated (default all), as 'SOT-GLP / GL-MCM'")
    ap.add_argument("--out", help="also write the summary to this markdown file")
    args = ap.parse_args(argv)
    # A row named twice is shown once (its runs' lines and statistics were shown twice), as config.scores' repeats are.
    rows = list(dict.fromkeys(r.strip() for r in args.rows.split(",") if r.strip())) if args.rows is not None else None
    if args.out is not None and (folder := written_in(args.out)):
        raise InvalidInput(
            f"--out {args.out} is one of the files jaxood wrote in {folder}, which the summary would write over: give "
            f"another --out, as {os.path.join(folder, 'summary.md')}"
        )
    text = summary(args.runs, rows)
    print(text, end="")
    if args.out is not None:
        with write_out(os.path.expanduser(args.out), "the summary (printed above)") as f:
            f.write(text)
        print(f"\nSummary written to {args.out}")
    return 0


if __name__ == "__main__":
    exit_with(report_user_errors(main, OUT_KEPT)(sys.argv[1:]))
