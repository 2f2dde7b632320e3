"""Errors whose message is the whole story: what is wrong and how to fix it.

The command lines (`jaxood.cli.run`) print such an error's message alone: a
traceback of jaxood's internals would only bury it (`JAXOOD_TRACEBACK=1` shows
it anyway). Any other exception is a bug and keeps its traceback. Each class
also derives from the built-in error it refines, so `except ValueError` and
`except FileNotFoundError` still catch them.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class UserError(Exception):
    """Bad input, or a run stopped on purpose, with a message naming the problem and the fix."""


class InvalidInput(UserError, ValueError):
    """A setting, a file or a combination of them that the run cannot use."""


class InputMissing(UserError, FileNotFoundError):
    """A model, dataset or file is not where jaxood was told to look."""


class LossNotFinite(UserError, FloatingPointError):
    """Training stopped at a NaN/inf loss; the last good checkpoint is kept."""


class NotSaved(UserError, OSError):
    """A run stopped because its workdir could not be written (a checkpoint, the training log, the report: a full
    disk, a quota, a folder it may not write, a failing disk); what was saved before is kept, and the same command
    goes on from it."""


def os_error_code(err: BaseException) -> int | None:
    """The operating system's error number behind `err`: the first `errno` along its causes, or TensorStore's
    `os_error_code` in the innermost one's text (orbax wraps TensorStore's errors in its own)."""
    while getattr(err, "errno", None) is None and (err.__cause__ or err.__context__):
        err = err.__cause__ or err.__context__
    if getattr(err, "errno", None) is not None:
        return err.errno
    found = re.search(r"os_error_code='(\d+)'", str(err))
    return int(found.group(1)) if found else None


def write_fix(err: BaseException, where: str, room: str | None = None) -> str:
    """What to do about a write to `where` ("that folder", a workdir) that failed with `err`: make it writable where
    the file system refused it (permissions, a read-only mount); free space (`room`, or "Free space in <where>")
    where it ran out of room (a full disk, a quota); otherwise check it and its disk (a failing disk or network
    mount, EIO; a folder that became a file, ENOTDIR), whose reason the caller's message gives."""
    code = os_error_code(err)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Make {where} writable"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return room or f"Free space in {where}"
    return f"Check {where} and the disk that holds it"


class Preempted(UserError):
    """Training stopped at a preemption notice (SIGTERM), Ctrl-C or a closed terminal after saving a checkpoint; the
    same command resumes it."""


class StoppedAtOnce(Preempted):
    """A run stopped by either signal where it was, raised from the signal handler (an evaluation, which has
    nothing to save before its end); the message says what was kept and what to rerun."""


def first_ten(items) -> str:
    """`items` (text) joined by commas, the first ten of them, then "..." where there are more: a message's examples."""
    items = list(items)
    return ", ".join(items[:10]) + (", ..." if len(items) > 10 else "")


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message (another library's, for a one-line error of jaxood's), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# A command stopped by Ctrl-C where no handler saves first (loading, compiling, a second Ctrl-C in training): its
# message, and its exit status (a shell's for a command stopped by SIGINT).
INTERRUPTED_STATUS = 130
INTERRUPTED = (
    "stopped by Ctrl-C. Files written before it are kept: a training run resumes from its last checkpoint when the "
    "same command runs again."
)


class AtOnce(int):
    """An exit status after which `exit_with` exits at once: the command was stopped by a signal where it was."""


def report_user_errors(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """`main` for a command line: a `UserError` prints `error: <message>` on stderr and returns exit status 1; Ctrl-C
    (KeyboardInterrupt: before training, where it was a traceback of whatever was running) prints `INTERRUPTED` and
    returns `INTERRUPTED_STATUS`, as a shell reports a command stopped by SIGINT. Those two, and `StoppedAtOnce`,
    stopped the command by a signal where it was: their status is `AtOnce`."""

    def guarded(argv: list[str]) -> Any:
        try:
            return main(argv)
        except (UserError, KeyboardInterrupt) as err:
            if os.environ.get("JAXOOD_TRACEBACK"):
                raise
            if isinstance(err, KeyboardInterrupt):
                print(INTERRUPTED, file=sys.stderr, flush=True)
                return AtOnce(INTERRUPTED_STATUS)
            print(f"error: {err}\n(JAXOOD_TRACEBACK=1 shows where it was raised)", file=sys.stderr, flush=True)
            return AtOnce(1) if isinstance(err, StoppedAtOnce) else 1

    return guarded


def exit_with(status: int) -> NoReturn:
    """A command line's exit with `status` (`report_user_errors`'): `sys.exit`, but after a stop by a signal
    (`AtOnce`) at once, without the interpreter's finalisation. An XLA compile that the signal's exception
    interrupted runs on in a thread of its own, and finalising while it ran crashed with "Fatal Python error:
    Segmentation fault" after the message (jax 0.10.2 on CPU: Ctrl-C as the train step compiled, SIGTERM 2 s
    into jaxood.evaluate, either around a bare jit compile); the run's `finally` and `with` blocks have all run
    by then."""
    if isinstance(status, AtOnce):
        logging.shutdown()  # absl's and Python's log handlers, flushed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
