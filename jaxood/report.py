"""Results tables (Markdown, laid out like the papers') and plots (score histograms, ROC curves)."""

from __future__ import annotations

import fnmatch
import functools
import glob
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import time

import jax
import numpy as np

from jaxood import distributed
from jaxood.cache import write_whole
from jaxood.errors import joined
from jaxood.metric_log import METRICS, SUPERSEDED
from jaxood.run_folders import RUN_CONFIG, TRAINED_BY, run_method

PACKAGES = ("jaxood", "jax", "jaxlib", "flax", "optax", "ott-jax", "numpy", "transformers")


def versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def source(package_dir: str = os.path.dirname(os.path.abspath(__file__))) -> dict | None:
    """The git commit jaxood runs from, where that is a git checkout (`pip install -e .` of a clone): `commit`;
    `dirty`, whether files differ from it (`CHANGED_FILES`); and `diff` where they do (None where not), the first 16
    hex digits of the sha256 of, for each such file, its path from the checkout's top, a NUL, its bytes (none where
    it cannot be read: deleted, a link to nothing) and a NUL, so that two runs from one commit with other changes
    differ. Elsewhere (an installed wheel, a checkout of another project that holds jaxood, no git, no answer from
    git in 10 s, a checkout git will not read as another user's: `_say_if_untrusted`) the one `launch/tpu_pod.sh`
    gave its workers' copy, which has no git history, in `$JAXOOD_SOURCE`; else None."""

    def git(*args: str) -> bytes:
        run = subprocess.run(
            ["git", "--no-optional-locks", "-C", package_dir, *args], capture_output=True, timeout=10, check=True
        )  # --no-optional-locks: hosts sharing a checkout do not contend for its index lock
        return run.stdout

    try:
        top = os.fsdecode(git("rev-parse", "--show-toplevel").rstrip(b"\n"))
        if not os.path.samefile(os.path.join(top, os.path.basename(package_dir)), package_dir):
            return launched_source()  # a repository that holds an installed copy (site-packages in a home folder)
        commit = git("rev-parse", "HEAD").decode("ascii").strip()
        changed = [git(*question) for question in CHANGED_FILES]
    except subprocess.CalledProcessError as err:  # not a checkout, or git will not read it
        given = launched_source()
        if given is None:
            _say_if_untrusted(err.stderr, os.path.dirname(package_dir))
        return given
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):  # no git, no answer in 10 s (a hung mount)
        return launched_source()
    paths = [path for path in b"".join(changed).split(b"\0") if path]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path + b"\0" + _readable_bytes(os.path.join(os.fsencode(top), path)) + b"\0")
    return {"commit": commit, "dirty": bool(paths), "diff": digest.hexdigest()[:16] if paths else None}


# The files a checkout's `source` hashes, asked of git in jaxood/, each list NUL-separated, paths from the checkout's
# top: the tracked files that differ from HEAD (anywhere), then the files in jaxood/ git neither tracks nor ignores (a
# new module). Their bytes, not git's diff of them, whose form git's settings change (diff.noprefix, diff.algorithm,
# textconv), so that two machines with the same changes give the same hash. Untracked files outside the package (a
# workdir, a dataset in the checkout) are not read. launch/tpu_pod.sh asks the same questions.
CHANGED_FILES = (
    ("diff", "--name-only", "-z", "--no-relative", "--no-renames", "-O/dev/null", "HEAD"),
    ("ls-files", "-z", "--others", "--exclude-standard", "--full-name"),
)


def _say_if_untrusted(stderr: bytes, checkout: str) -> None:
    """Where git refuses jaxood's checkout as another user's ("dubious ownership": a checkout mounted into a
    container, a lab's shared one), the reports named no commit, and nothing said why. Said once a process."""
    refused = re.search(rb"dubious ownership in repository at '(.+)'", stderr)
    if refused and os.path.realpath(os.fsdecode(refused[1])) == os.path.realpath(checkout):
        _say_untrusted(os.fsdecode(refused[1]))  # as git names it, which its safe.directory must match


@functools.cache  # once a process: source() runs at a training run's start and in its evaluation
def _say_untrusted(checkout: str) -> None:
    distributed.log(
        f"note: git will not read jaxood's checkout {checkout}, which another user owns (git's safe.directory "
        f"check), so the reports name no commit. To let it: git config --global --add safe.directory {checkout}"
    )


def _readable_bytes(path: bytes) -> bytes:
    """A file's bytes; none where it cannot be read (deleted, a link to nothing or to a folder), as the launcher's
    `cat`."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def launched_source() -> dict | None:
    """The `source()` a launcher gave a copy of the checkout without git (`$JAXOOD_SOURCE`, JSON); None without
    one, or with one not in that form."""
    try:
        code = json.loads(os.environ.get("JAXOOD_SOURCE") or "null")
    except ValueError:
        return None
    return code if is_source(code) else None


def is_source(code) -> bool:
    """Whether `code` is a `source()` (a dict of `commit`, `dirty` and `diff`), as read back from a file."""
    return isinstance(code, dict) and set(code) == {"commit", "dirty", "diff"}


def devices(compute_dtype) -> dict:
    """What the numbers were computed on: JAX's platform, the device kind, how many devices and hosts, the CLIP's
    compute dtype (config.dtype "auto" is bfloat16 on accelerators, float32 on CPU), and JAX's matmul precision for
    float32 ("default": TF32 on recent NVIDIA GPUs, bfloat16 passes on TPUs, full float32 on CPU;
    JAX_DEFAULT_MATMUL_PRECISION=highest asks for full float32 everywhere)."""
    first = jax.devices()[0]
    return {
        "platform": first.platform, "kind": first.device_kind, "count": jax.device_count(),
        "hosts": jax.process_count(), "compute_dtype": jax.numpy.dtype(compute_dtype).name,
        "matmul_precision": jax.config.jax_default_matmul_precision or "default",
    }  # fmt: skip


# The least fraction of tied (ID, OOD) pairs a report says (metrics.tied_pairs): AUROC could move 0.05 points.
TIES_NOTED = 1e-3


def pct(x: float) -> str:
    """A fraction as the reports write it: a percentage to two decimals (0.9416 -> "94.16")."""
    return f"{100 * x:.2f}"


def markdown(results: dict) -> str:
    """The tables (`tables`), then which code computed them where jaxood ran from a git checkout (`source`): a report
    compared with one from another commit, or with changes made since; and which trained the run, where that was
    other code (`trained_by`, a run resumed after a change)."""
    md = tables(results)
    if code := results.get("source"):
        md += f"\nComputed by jaxood at {code_name(code)}\n"
    trained = results.get("trained_by") or []
    if any(part["source"] != results.get("source") for part in trained):  # a run resumed under other code
        parts = "; ".join(f"from step {part['from_step']} at {code_name(part['source'])}" for part in trained)
        md += f"\nTrained by jaxood {parts}\n"
    return md


def code_name(code: dict | None) -> str:
    """A `source()` in words: "git commit <sha>[, with uncommitted changes (diff <sha256>)]", or that none is
    known."""
    if code is None:
        return "a commit not known (not a git checkout, or not recorded)"
    changes = f", with uncommitted changes (diff {code['diff']})" if code["dirty"] else ""
    return f"git commit {code['commit']}{changes}"


def tables(results: dict) -> str:
    """FPR95 / AUROC per OOD set, each group's average (OpenOOD's near and far) and the average of all, one row per
    method / score; then AUPR."""
    table = results["ood"]
    groups = results.get("ood_groups") or {}
    rows = list(table)
    sets = [s for s in results["counts"] if s != "id"]
    acc = results.get("id_accuracy") or {}
    acc_of = lambda method: pct(acc[method]) if acc.get(method) is not None else "n/a"  # noqa: E731
    counts = f"ID examples: {results['counts']['id']}; OOD: " + (
        ", ".join(f"{s} {results['counts'][s]}" for s in sets) or "none"
    )
    if model := (results.get("config") or {}).get("model"):  # which CLIP, on what: a report read apart from its json
        dev = results.get("devices")
        where = f"; {dev['compute_dtype']} on {dev['count']} {dev['kind']} device(s)" if dev else ""
        counts = f"Model: {model}{where}\n\n{counts}"
    if "step" in results:  # a training run's report: which of its checkpoints the trained rows are
        counts = f"Training step evaluated: {results['step']}\n\n{counts}"
    if not rows or not sets:  # an empty config.scores, a method with no score of its own (CLIP pretraining), or no
        # OOD set to score against (few-shot classification)
        accuracy = ", ".join(f"{method} {acc_of(method)}" for method in acc) or "none"
        why = "No score rows (config.scores names none)" if not rows else "No OOD set (config.ood_datasets names none)"
        return "\n".join([counts, "", f"{why}. ID accuracy (%): {accuracy}", *_id_notes(results)]) + "\n"
    method_of = {r: r.split(" / ")[0] for r in rows}  # "SOT-GLP / GL-MCM": SOT-GLP, whose ID accuracy it shows
    # Columns (title, the OOD sets it covers, its metrics per row): each set, each group's average, the average.
    columns = [(s, [s], {r: table[r][s] for r in rows}) for s in sets]
    columns += [(f"{g} avg", group["sets"], group["mean"]) for g, group in groups.items()]
    columns += [("Avg", sets, {r: table[r]["mean"] for r in rows})]
    # A metric is None against a set with no scored example ("n/a") or with NaN scores ("NaN"), and so is a mean.
    unscored = [s for s in sets if not (results["counts"]["id"] and results["counts"][s])]

    def cell(row: str, column: tuple, metric: str) -> str:
        _, covered, by_row = column
        if by_row[row] is None:
            return "n/a" if set(covered) & set(unscored) else "NaN"
        return pct(by_row[row][metric])

    lines = [
        counts,
        "",
        "FPR95 (%) lower is better / AUROC (%) higher is better",
        "",
        "| Method / score | ID acc | " + " | ".join(f"{t} FPR95 | {t} AUROC" for t, _, _ in columns) + " |",
        "|---|---|" + "---|---|" * len(columns),
    ]
    for r in rows:
        cells = [f"{cell(r, c, 'fpr95')} | {cell(r, c, 'auroc')}" for c in columns]
        lines.append(f"| {r} | {acc_of(method_of[r])} | " + " | ".join(cells) + " |")
    in_rows = set(method_of.values())
    if rowless := [m for m in acc if m not in in_rows]:  # a method's branches (SOT-GLP's)
        shown = ", ".join(f"{m} {acc_of(m)}" for m in rowless)
        lines += ["", f"ID accuracy (%) of the predictions without a score row: {shown}"]
    lines += [
        "",
        "AUPR-In / AUPR-Out (%)",
        "",
        "| Method / score | " + " | ".join(t for t, _, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for r in rows:
        cells = [f"{cell(r, c, 'aupr_in')} / {cell(r, c, 'aupr_out')}" for c in columns]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += _id_notes(results)
    if not results["counts"]["id"]:
        lines += ["", "No ID image scored: no metric (n/a)"]
    elif unscored:
        lines += ["", f"No image scored in {', '.join(unscored)}: no metric against it (n/a), nor an average"]
    for r, nans in results.get("nan_scores", {}).items():
        where = ", ".join(f"{k} {v}" for k, v in nans.items())
        lines += ["", f"{r}: NaN scores ({where}) have no rank, so its metrics against a set with any are NaN"]
    for r, ties in results.get("tied_pairs", {}).items():
        if max(ties.values()) >= TIES_NOTED:
            where = ", ".join(f"{k} {pct(v)} %" for k, v in ties.items())
            lines += [
                "",
                f"{r}: equal ID and OOD scores (of the pairs: {where}), which AUROC counts half and FPR95 as false "
                f"positives: its AUROC could be up to {pct(max(ties.values()) / 2)} points higher or lower had the "
                "score told them apart (a score that saturates, as a softmax at 1 in float32 at a small temperature)",
            ]
    return "\n".join(lines) + "\n"


def _id_notes(results: dict) -> list[str]:
    """The lines, each after an empty one, on the images left out: undecodable ones, and ID images without a label,
    which ID accuracy leaves out."""
    lines = []
    bad = {k: v for k, v in results.get("unreadable", {}).items() if v}
    if bad:
        lines += ["", "Undecodable images skipped: " + ", ".join(f"{k} {v}" for k, v in bad.items())]
    n_id = results["counts"]["id"]
    if n_id and (labelled := results.get("id_labelled", n_id)) < n_id:  # an image list's lines without a label
        ood = "; the OOD metrics use all of them" if len(results["counts"]) > 1 else ""
        lines += [
            "",
            f"ID accuracy is over the {labelled} ID images with a label, of {n_id} (the others have none, as an image "
            f"list's lines without one){ood}",
        ]
    return lines


EARLIER = "earlier_results"
RESULTS_JSON, RESULTS_MD, SCORES = "results.json", "results.md", "scores.npz"
PLOT_KINDS = ("hist", "roc")  # one figure of each per score row
PLOT_NAME = "{kind}_{name}.png"  # name: the row's slug (plot_file), or a glob
PLOT_GLOBS = tuple(PLOT_NAME.format(kind=kind, name="*") for kind in PLOT_KINDS)  # every plot of a report
REPORT_FILES = (RESULTS_JSON, RESULTS_MD, SCORES, *PLOT_GLOBS)  # a report's files in its folder, as globs
CURVES = "training_curves.png"
RUN_FILES = (RUN_CONFIG, TRAINED_BY, METRICS, SUPERSEDED, CURVES)  # a training run's own files in its workdir


def written_in(path: str) -> str | None:
    """The folder of the jaxood report or training run (its results.json, or the run's config.json) that `path` is
    one of the files of (`REPORT_FILES`, `RUN_FILES`), else None."""
    folder = os.path.normpath(os.path.dirname(os.path.expanduser(path)) or ".")
    named = any(fnmatch.fnmatchcase(os.path.basename(path), pattern) for pattern in (*REPORT_FILES, *RUN_FILES))
    held = os.path.isfile(os.path.join(folder, RESULTS_JSON)) or run_method(folder)
    return folder if named and held else None


def write(workdir: str, results: dict) -> str:
    """Write `results.md` and then `results.json`, the report's mark (`jaxood.summarize` reads it), into `workdir`,
    each whole or not at all (`write_whole`): a stop or a full disk as they were written left them cut short;
    returns the markdown."""
    md = markdown(results)
    with write_whole(os.path.join(workdir, RESULTS_MD)) as f:
        f.write(md)
    with write_whole(os.path.join(workdir, RESULTS_JSON)) as f:
        json.dump(results, f, indent=1, default=str)
    return md


def where_written(workdir: str, n_plots: int) -> str:
    """The line after the tables, naming the report's files and their folder (the output ended with the tables)."""
    files = [f"{RESULTS_MD} (these tables)", RESULTS_JSON, f"{SCORES} (each example's scores)"]
    if n_plots:
        files.append(f"{n_plots} plots ({', '.join(PLOT_GLOBS)})")
    return f"Report in {workdir}: {joined(files)}"


def write_scores(workdir: str, outs: dict[str, dict], sources: dict) -> None:
    """`scores.npz`: per set ("id", then the OOD sets) and example, what the metrics were computed from.

    Keys are "<set>/<row>" (e.g. "near/zero-shot / MCM"), "<set>/pred/<method>", "<set>/label" and "<set>/index",
    the example's position in its dataset (an undecodable example has no entry); for a set of files (a folder, an
    image list: `sources[set].paths`), "<set>/path", each example's file, so the images a score gets wrong can be
    looked at.
    """
    arrays = {f"{name}/{key}": value for name, out in outs.items() for key, value in out.items() if key != "unreadable"}
    for name, out in outs.items():
        if (paths := getattr(sources[name], "paths", None)) is not None:
            arrays[f"{name}/path"] = np.asarray([paths[i] for i in out["index"]], dtype=str)
    with write_whole(os.path.join(workdir, SCORES), "wb") as f:
        np.savez_compressed(f, **arrays)


def keep_earlier(workdir: str) -> str | None:
    """Move the report an earlier evaluation left in `workdir` (results.json / .md, scores.npz, plots) into
    `workdir/earlier_results/<UTC time of its results.json>/`, so that re-evaluating (another OOD benchmark, more
    steps, other scores) loses nothing. Returns that folder, or None when there was no report."""
    earlier = os.path.join(workdir, RESULTS_JSON)
    if not os.path.exists(earlier):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(os.path.getmtime(earlier)))
    dest, n = os.path.join(workdir, EARLIER, stamp), 1
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(workdir, EARLIER, f"{stamp}-{n}")
    os.makedirs(dest)
    for pattern in REPORT_FILES:
        for name in glob.glob(pattern, root_dir=workdir):
            os.replace(os.path.join(workdir, name), os.path.join(dest, name))
    return dest


def training_curves(workdir: str, records: list[dict]) -> str | None:
    """`training_curves.png` in `workdir`: each logged scalar of `records` (metrics.jsonl's rows) against the step,
    one panel each; its path, or None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(k for r in records for k in r if k != "step"))
    if not names:
        return None
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        points = [(r["step"], r[name]) for r in records if name in r]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    path = os.path.join(workdir, CURVES)
    save_figure(fig, path)
    return path


def save_figure(fig, path: str) -> None:
    """`fig` as a PNG at `path`, whole or not at all (`write_whole`): saved in place, a stop or a full disk midway
    left a cut PNG where a whole one had been; then closed."""
    import matplotlib.pyplot as plt

    try:
        with write_whole(path, "wb") as f:
            fig.savefig(f, format="png", dpi=90)
    finally:
        plt.close(fig)


def slug(row: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", row.lower()).strip("_")


def plot_file(kind: str, row: str) -> str:
    return PLOT_NAME.format(kind=kind, name=slug(row))


def plots(workdir: str, table: dict, id_out: dict, ood_outs: dict) -> list[str]:
    """Per score row of `table` (the results' "ood": row -> OOD set -> metrics, whose FPR95 and AUROC the titles
    and legends show): histograms of ID vs each OOD set with the 95% TPR threshold, and ROC curves; none without an
    OOD set."""
    if not ood_outs:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxood.scores import metrics

    written = []

    def save(fig, kind, row):
        fig.tight_layout()
        path = os.path.join(workdir, plot_file(kind, row))
        save_figure(fig, path)
        written.append(path)

    finite = lambda x: x[np.isfinite(x)]  # noqa: E731  (what a histogram can bin; NaN has no metrics either)
    count = lambda shown, x: f"{len(shown)}" if len(shown) == len(x) else f"{len(shown)} finite of {len(x)}"  # noqa: E731
    # Why a set has no metrics (None in `table`): NaN scores, or no image scored at all (all undecodable).
    why = lambda x, ids: "no image scored" if not (x.size and ids.size) else "NaN scores"  # noqa: E731
    for row, per_set in table.items():
        ids = id_out[row]
        threshold = metrics.tpr95_threshold(ids) if ids.size and not np.isnan(ids).any() else np.nan
        fig, axes = plt.subplots(1, len(ood_outs), figsize=(4.2 * len(ood_outs), 3.6), squeeze=False)
        for ax, (name, out) in zip(axes[0], ood_outs.items()):
            shown_id, shown_ood = finite(ids), finite(out[row])
            # In float64: scores a float32 ulp apart (a saturated softmax, ~1 - 6e-8 and 1) have no 40 float32 bins.
            bins = np.histogram_bin_edges(np.r_[shown_id, shown_ood].astype(np.float64), bins=40)
            for shown, x, label in ((shown_id, ids, "ID"), (shown_ood, out[row], name)):
                if shown.size:  # a density of no values divides by zero
                    ax.hist(shown, bins=bins, alpha=0.55, density=True, label=f"{label} ({count(shown, x)})")
            if np.isfinite(threshold):
                ax.axvline(threshold, color="k", ls="--", lw=1, label="95% TPR threshold")
            m = per_set[name]
            metric_text = (
                why(out[row], ids) if m is None else f"FPR95 {100 * m['fpr95']:.1f}, AUROC {100 * m['auroc']:.1f}"
            )
            ax.set_title(f"{name}: {metric_text}", fontsize=9)
            ax.set_xlabel("score (higher = more ID)")
            # Below the panel: inside, a legend covered bars or the threshold, and matplotlib's search for its least
            # bad place there warned of itself ("can be slow") where it took over a second on a loaded machine.
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
        fig.suptitle(row, fontsize=10)
        save(fig, "hist", row)

        fig, ax = plt.subplots(figsize=(4.2, 4))
        for name, out in ood_outs.items():
            if per_set[name] is None:  # no ranking, so no curve; the legend still names the set
                ax.plot([], [], label=f"{name} ({why(out[row], ids)}, no curve)")
                continue
            fpr, tpr = metrics.roc_curve(ids, out[row])
            ax.plot(fpr, tpr, label=f"{name} (AUROC {100 * per_set[name]['auroc']:.1f})")
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
        ax.axhline(0.95, color="k", lw=0.8, ls="--")
        ax.set_xlabel("FPR (OOD accepted)")
        ax.set_ylabel("TPR (ID accepted)")
        ax.set_title(row, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        save(fig, "roc", row)
    return written
