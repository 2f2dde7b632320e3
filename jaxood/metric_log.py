"""A training run's log: each logged step's scalars to stdout, `WORKDIR/metrics.jsonl` and TensorBoard; its
evaluation's figures to TensorBoard too."""

from __future__ import annotations

import contextlib
import json
import os
import re

from jaxood.cache import write_whole

METRICS, SUPERSEDED = "metrics.jsonl", "metrics.superseded.jsonl"
TENSORBOARD = "tb"  # the workdir's TensorBoard logs: the training curves, and in `eval` the reports' figures


class MetricWriter:
    """Scalars to stdout, `metrics.jsonl` and TensorBoard (tensorboardX: clu's writers import TensorFlow).

    A run that starts at step `start` (a resumed one: its latest checkpoint) logs the steps after it again. The
    records an earlier attempt left of those (one killed, or stopped by a NaN, between checkpoints) move from
    metrics.jsonl to metrics.superseded.jsonl, and TensorBoard hides its events of them (`purge_step`): before,
    both curves showed those steps twice.
    """

    def __init__(self, workdir: str, enabled: bool, tensorboard: bool, start: int = 0):
        self.enabled = enabled
        self._tb = None
        if enabled:
            path = os.path.join(workdir, METRICS)
            if moved := _supersede_after(path, start, os.path.join(workdir, SUPERSEDED)):
                print(f"{METRICS}: {moved} record(s) after step {start}, trained again now, moved to {SUPERSEDED}")
            self._jsonl = open(path, "a", encoding="utf-8")
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD), purge_step=start + 1)

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        print(f"[step {step}] " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()), flush=True)
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        if self._tb:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        """Flushes and closes the logs; a failure to (a full disk) is said, not raised: it would replace the error
        a run may be stopping with (the checkpoint that did not fit). metrics.jsonl is flushed at each record."""
        if not self.enabled:
            return
        for log in filter(None, (self._jsonl, self._tb)):
            try:
                log.close()
            except OSError as err:
                print(f"the training log could not be closed: {err}", flush=True)


def _record(line: str) -> dict | None:
    """A metrics.jsonl line's record, or None for a line cut short by a kill (or one without a step)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int | float) else None


def _supersede_after(path: str, step: int, superseded: str) -> int:
    """Move the records of `path` (JSON lines) past `step`, and any line cut short, to `superseded`; how many."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f]
    kept, moved = [], []
    for line in lines:
        record = _record(line)
        (kept if record is not None and record["step"] <= step else moved).append(line)
    if moved:
        with open(superseded, "a", encoding="utf-8") as f:
            f.writelines(moved)
        with write_whole(path) as f:
            f.writelines(kept)
    return len(moved)


def records(workdir: str) -> list[dict]:
    """`workdir`'s metrics.jsonl records in order, without a line cut short by a kill; none without the file."""
    try:
        f = open(os.path.join(workdir, METRICS), encoding="utf-8")
    except FileNotFoundError:
        return []
    with f:
        return [r for r in map(_record, f) if r is not None]


def logged_at(workdir: str, step: int, prefix: str) -> bool:
    """Whether `workdir`'s metrics.jsonl holds a record of `step` with a scalar whose name starts with `prefix`."""
    return any(k.startswith(prefix) for r in records(workdir) if r["step"] == step for k in r)


def tensorboard_tag(name: str) -> str:
    """`name` as a TensorBoard tag: " / " as "/", and any other character TensorBoard does not take as `_`."""
    return re.sub(r"[^-/\w.]", "_", name.replace(" / ", "/"))


def accuracy_record(id_accuracy: dict[str, float | None]) -> dict[str, float]:
    """Each prediction's ID accuracy (a fraction, None where no image was scored) as `metrics.jsonl` logs it: in
    percent, as the report's tables, under the report's TensorBoard tags (`id_accuracy/SOT-GLP_global`)."""
    return {tensorboard_tag(f"id_accuracy/{k}"): 100 * v for k, v in id_accuracy.items() if v is not None}


def write_evaluation(workdir: str, step: int, results: dict) -> None:
    """A training run's report (`jaxood.evaluate`'s results) as TensorBoard scalars at the step it evaluated, in
    percent as its tables: `id_accuracy/<method>`, `<metric>/<OOD set or mean>/<row>` (`auroc/near/SOT-GLP/GL-MCM`)
    and `<metric>/<group>_mean/<row>` for `config.ood_groups`, with any other character TensorBoard does not take
    in a tag as `_`. They go to `WORKDIR/tb/eval`, a run of its own beside the training curves in `tb`, where the
    runs of a sweep compare. A figure the report has none of (NaN scores) is left out; the step evaluated again
    replaces them. Figures that cannot be written (a full disk) are said, not raised: the report is written
    already."""
    from tensorboardX import SummaryWriter

    per_set = [(name, row, of) for row, sets in results["ood"].items() for name, of in sets.items()]
    per_set += [  # OpenOOD's near and far means
        (f"{group} mean", row, of) for group, means in results.get("ood_groups", {}).items()
        for row, of in means["mean"].items()
    ]  # fmt: skip
    values = accuracy_record(results["id_accuracy"])  # as the training log's, which TensorBoard draws with them
    for name, row, of in per_set:
        values.update({tensorboard_tag(f"{metric}/{name}/{row}"): 100 * v for metric, v in (of or {}).items()})
    try:
        with contextlib.closing(SummaryWriter(os.path.join(workdir, TENSORBOARD, "eval"), purge_step=step)) as tb:
            for tag, value in values.items():
                tb.add_scalar(tag, value, step)
    except OSError as err:
        print(f"the evaluation's figures could not be written to TensorBoard: {err}", flush=True)
