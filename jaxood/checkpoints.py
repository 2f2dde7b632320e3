"""A training run's checkpoints (`WORKDIR/checkpoints`): orbax saves of its state, restored strictly.

A train state's fields are saved by name, less those that are None (`_stored`). A restore whose saved tree differs
from the run's names the mismatched leaves (`check_tree`); a damaged checkpoint, or a save that fails (a full disk),
is one error naming its folder and the way on, with orbax's threads' own tracebacks of the same failure held back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from typing import Any

import flax
import orbax.checkpoint as ocp

from jaxood.errors import InvalidInput, NotSaved, first_line, os_error_code, write_fix
from jaxood.models.convert import check_tree


class Checkpoints:
    """orbax CheckpointManager around a train state; restoring is strict and names mismatched leaves."""

    def __init__(self, directory: str, keep: int):
        # Synchronous saves: the trainer waits for each save anyway, and an asynchronous save that failed as it made
        # its folder (a file system refusing it, or out of room for it) left orbax's threads waiting for one another
        # (up to its 300 s barrier timeout), so the process hung after its error.
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=options,
            item_handlers=ocp.StandardCheckpointHandler(),  # so a fresh manager can read a saved tree's metadata
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        folder = self.manager.directory
        try:
            with _orbax_failure_quiet(os.path.join(folder, f"{step}.orbax-checkpoint-tmp")):
                self.manager.save(step, args=ocp.args.StandardSave(_stored(state)))
                self.manager.wait_until_finished()
        except Exception as err:  # orbax's writes are atomic: what it did not finish is a *-tmp folder it skips
            last = self.manager.latest_step()
            kept = f"the last good checkpoint (step {last}) is in {folder}" if last else f"none is in {folder} yet"
            fix = write_fix(err, "that folder", room="Free space there (or lower keep_checkpoints)")
            raise NotSaved(
                f"the checkpoint at step {step} could not be saved ({_root_message(err)}); {kept}. {fix}, then run the "
                "same command again to resume."
            ) from err

    def restore(self, step: int, like: Any) -> Any:
        # The saved tree's metadata first: a mismatch is named here, before orbax would fail inside TensorStore.
        with self._readable(step):
            saved = self.manager.item_metadata(step)
        saved = getattr(saved, "tree", saved)  # orbax TreeMetadata -> nested dict of ArrayMetadata
        # Both as nested dicts (tuples and lists of optimiser states keyed "0", "1", ...), as orbax stores them.
        as_dict = flax.serialization.to_state_dict
        what, fix = f"checkpoint at step {step}", "restore it with the config it was trained with"
        stored = _stored(like)
        check_tree(as_dict(stored), as_dict(saved), what=what, fix=fix)
        with self._readable(step):
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(stored))
        return dataclasses.replace(like, **restored) if stored is not like else restored

    @contextlib.contextmanager
    def _readable(self, step: int):
        """Orbax's or TensorStore's error reading a damaged checkpoint (a failed copy or disk; orbax's own writes are
        atomic) as one naming the folder and the way on: before, 60 lines of TensorStore's spec, and at exit ~40
        lines of its reads' callbacks into orbax's closed event loop."""
        folder = os.path.join(self.manager.directory, str(step))
        try:
            with _orbax_failure_quiet(folder):
                yield
        except Exception as err:
            earlier = [s for s in self.manager.all_steps() if s < step]
            way_on = f"resume from step {max(earlier)}, the latest before it" if earlier else "start again from step 0"
            raise InvalidInput(
                f"the checkpoint at step {step} cannot be read ({_root_message(err)}); it may be damaged. Move "
                f"{folder} out of the checkpoints folder to {way_on}."
            ) from err


def _stored(state: Any) -> Any:
    """What a save writes of `state`: a train state's fields by name, less those that are None (a part that a setting
    leaves out, such as `TrainState.scaler` without loss scaling). A checkpoint saved before such a field existed
    is then the same tree as one saved since with the field left out, and restores."""
    if not dataclasses.is_dataclass(state):
        return state
    fields = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}
    return {name: value for name, value in fields.items() if value is not None}


def _root_message(err: BaseException) -> str:
    """The first line of the innermost cause of `err`: TensorStore's own message, under orbax's wrappers; for an
    operating system's error (a full disk, a quota) its reason alone, which TensorStore gives after long paths."""
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__
    if getattr(err, "errno", None) is None and (code := os_error_code(err)) is not None:
        return os.strerror(code)
    return first_line(err)[:400]


@contextlib.contextmanager
def _orbax_failure_quiet(folder: str):
    """A save or restore that fails has orbax's threads and tasks say so, each with its traceback (~40-50 lines
    around the one error the caller raises): orbax's error log from each thread, held back while it runs;
    TensorStore's callbacks into orbax's closed event loop (Python's unraisable hook) and asyncio's log of each
    unretrieved task naming `folder` (the step's folder, or its temporary one for a save), held back from then on.
    Nothing else is."""
    absl = logging.getLogger("absl")
    only_below_error = lambda record: record.levelno < logging.ERROR  # noqa: E731
    absl.addFilter(only_below_error)
    previous = sys.unraisablehook
    sys.unraisablehook = lambda args: None if _closed_loop(args.exc_value) else previous(args)
    try:
        yield
    except Exception:
        logging.getLogger("asyncio").addFilter(lambda record: folder not in record.getMessage())
        raise  # the unraisable hook stays: the failed reads' and writes' callbacks go on after
    else:
        sys.unraisablehook = previous
    finally:
        absl.removeFilter(only_below_error)


def _closed_loop(err: BaseException | None) -> bool:
    return isinstance(err, RuntimeError) and str(err) == "Event loop is closed"
