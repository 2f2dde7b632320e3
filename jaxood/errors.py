"""Errors whose message is the whole story: what is wrong and how to fix it.

The command lines (`jaxood.cli.run`) print such an error's message alone: a
traceback of jaxood's internals would only bury it (`JAXOOD_TRACEBACK=1` shows
it anyway). Any other exception is a bug and keeps its traceback. Each class
also derives from the built-in error it refines, so `except ValueError` and
`except FileNotFoundError` still catch them.
"""

from __future__ import annotations

import _thread
import difflib
import errno
import logging
import os
import re
import select
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

# The commands' workdir lock (fcntl's flock) and their stop on a closed terminal (SIGHUP) are POSIX's: on Windows
# importing them failed with a traceback of the missing module. Models, scores and data load without them.
POSIX_ONLY = (
    "jaxood's commands (training, evaluation, pretraining) need a POSIX system (Linux, macOS): they lock their "
    "workdir with fcntl and save a run on SIGHUP, which Windows does not have. On Windows, run them inside WSL."
)


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


class OutOfOpenFiles(UserError):
    """The system refused this process another open file (EMFILE, or the system's ENFILE): not a damaged or an
    undecodable file, which jaxood counts and goes on without."""


def out_of_open_files(err: BaseException) -> bool:
    """Whether `err` is the system refusing another open file: an OSError's number, or array_record's RuntimeError
    ("open() failed: Too many open files; opening ...")."""
    return os_error_code(err) in (errno.EMFILE, errno.ENFILE) or os.strerror(errno.EMFILE) in str(err)


def open_files_error(what: str) -> OutOfOpenFiles:
    """The error for `what` ("TFDS dataset 'x' (train) record 7", an image's path) not opened for want of open files."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        unlimited = hard == resource.RLIM_INFINITY  # -1 on Linux, 2**63 - 1 on macOS
    except ImportError:  # not a Unix
        soft = hard = -1
        unlimited = False
    if unlimited and soft >= 0:  # macOS's default hard limit, under which it refuses more than kern.maxfilesperproc
        fix = "Raise it (`ulimit -n 65536` before the command; on macOS at most `sysctl kern.maxfilesperproc`)"
    elif 0 <= soft < hard:
        fix = f"Raise it (`ulimit -n {hard}` before the command)"
    else:
        fix = "Ask the machine's administrator for a higher hard limit (`ulimit -Hn`)"
    allowed = f" ({soft}, `ulimit -n`)" if soft >= 0 else ""
    return OutOfOpenFiles(
        f"{what} could not be opened: this process has as many files open as the system allows it{allowed}. TFDS "
        "keeps each shard file of a split open once it is read (ImageNet's training split has 1024), and jaxood "
        f"raises the limit as far as it may go when it opens a TFDS dataset. {fix}; the data is not damaged."
    )


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


def agreeing(count: int, one: str, more: str) -> str:
    """`one` where `count` is 1, else `more`: the words a message's count governs ("1 of 12 classes has", "2 of 12
    classes have")."""
    return one if count == 1 else more


def joined(items, last: str = "and") -> str:
    """`items` (text) as a message lists them: "a, b and c" (`last` "or": "a, b or c"); one alone as it is."""
    items = list(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}" if len(items) > 1 else "".join(items)


def not_one_of(name: str, value: Any, choices) -> str:
    """The message for a `value` of `name` that is none of `choices`: "name must be one of 'a', 'b' or 'c', got 'x'",
    and the nearest choice where one is close (" (did you mean 'b'?)", `nearest_choice`), as a mistyped config key
    or config file is answered. One form for every such setting, where each message listed its choices its own way."""
    choices = list(choices)
    allowed = f"one of {joined(map(repr, choices), 'or')}" if len(choices) > 1 else repr(choices[0])
    return f"{name} must be {allowed}, got {value!r}{_nearest_hint(value, choices)}"


def each_with_nearest(values, choices) -> str:
    """`values` none of `choices` listed as a message lists them, each with its nearest choice where one is near:
    "'glmcm' (did you mean 'gl_mcm'?) and 'knn'"."""
    choices = list(choices)
    return joined(f"{value!r}{_nearest_hint(value, choices)}" for value in values)


def _nearest_hint(value: Any, choices) -> str:
    """The hint " (did you mean 'b'?)" for the choice nearest to `value` (`nearest_choice`); "" where none is near."""
    near = nearest_choice(value, choices)
    return f" (did you mean {near!r}?)" if near is not None else ""


def nearest_choice(value: Any, choices, cutoff: float = 0.6) -> Any:
    """The choice nearest to `value` (a string), in any case (`MOS`: 'mos'): difflib's closest (at least `cutoff`
    alike), else the one choice that holds it (`pets`: 'oxford_pets', `aircraft`: 'fgvc_aircraft'); None where none
    is near."""
    if not isinstance(value, str):
        return None
    by_case = {str(c).lower(): c for c in choices}
    if near := difflib.get_close_matches(value.lower(), list(by_case), n=1, cutoff=cutoff):
        return by_case[near[0]]
    holding = [c for lower, c in by_case.items() if value.lower() in lower] if len(value) >= 3 else []
    return holding[0] if len(holding) == 1 else None


def unknown_argument(what: str, given: str, arguments) -> str:
    """The message "unknown <what> 'given'", with the nearest of `arguments` where one is near (`_nearest_argument`),
    as a config file's `get_config` refuses its argument: "unknown variant 'reference,pets' (did you mean
    reference,oxford_pets?)"."""
    near = _nearest_argument(given, arguments)
    return f"unknown {what} {given!r}" + (f" (did you mean {near}?)" if near else "")


def _nearest_argument(given: str, arguments) -> str | None:
    """The one of `arguments` (comma-separated parts, as a config file's `reference,oxford_pets`) nearest to `given`,
    part by part (`nearest_choice`): `reference,oxford_pets` for `refrence,pets`; None where a part has none near."""
    parts, picked = given.split(","), []
    alike = [a.split(",") for a in arguments if a.count(",") == len(parts) - 1]  # as many parts as `given`
    for i, part in enumerate(parts):
        options = {a[i] for a in alike if a[:i] == picked}
        pick = part if part in options else nearest_choice(part, sorted(options))
        if pick is None:
            return None
        picked.append(pick)
    return ",".join(picked)


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message (another library's, for a one-line error of jaxood's), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def missing_config_key(err: BaseException) -> InvalidInput | None:
    """Where `err` is ml_collections' KeyError (`config["x"]`, `jaxood.settings`) or AttributeError (`config.x`) for
    a key the config lacks (a config file written by hand, or for an earlier jaxood), the error that names the key,
    dotted from the config's root, and the fix; else None. ml_collections' own error names the key's last part alone,
    in a traceback of its internals."""
    config_dict = sys.modules.get("ml_collections.config_dict.config_dict")
    if not isinstance(err, KeyError | AttributeError) or config_dict is None:
        return None
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    reading = frames and frames[-1].f_code.co_filename == config_dict.__file__
    read = frames[-1].f_locals if reading and frames[-1].f_code.co_name in ("__getitem__", "__getattr__") else {}
    lacking, key = read.get("self"), read.get("key", read.get("attribute"))
    config_type = config_dict.ConfigDict
    if not isinstance(lacking, config_type) or not isinstance(key, str) or key in lacking:
        return None
    roots = [value for frame in frames for value in frame.f_locals.values() if isinstance(value, config_type)]
    path = max((path for root in roots if (path := _path_to(lacking, root, config_type)) is not None), key=len)
    return lacking_config_key(".".join([*path, key]))


def lacking_config_key(key: str) -> InvalidInput:
    """The error for a key, dotted, that the config lacks and the command reads."""
    return InvalidInput(
        f"the config has no key {key}, which this command reads: a config file written by hand, or for an earlier "
        "jaxood, holds every key of the shipped config file it follows (docs/config.md lists them, with their defaults)"
    )


def _path_to(target, config, config_type: type, path: tuple = ()) -> tuple | None:
    """The keys from `config` down to `target`, one of its ConfigDicts (`config_type`) or itself; None if not in it."""
    if config is target:
        return path
    for name, value in config.items():
        if isinstance(value, config_type) and (found := _path_to(target, value, config_type, (*path, str(name)))):
            return found
    return None


# A command stopped by Ctrl-C where no handler saves first (loading, compiling, a second Ctrl-C in training): its
# exit status (a shell's for a command stopped by SIGINT), and its message, which each command ends with what the
# stop kept (`report_user_errors`'s `kept`).
INTERRUPTED_STATUS = 130
INTERRUPTED = "stopped by Ctrl-C."


def keep_interrupts() -> None:
    """Let no Ctrl-C be lost where Python drops the KeyboardInterrupt it raised (`_interrupt_again`), as it drops
    any exception raised in a garbage-collection callback or a finaliser; and a stop that jaxood raises again be
    said once."""
    global _unraisable_before
    if sys.unraisablehook is not _interrupt_again:
        _unraisable_before, sys.unraisablehook = sys.unraisablehook, _interrupt_again


_unraisable_before = sys.__unraisablehook__


def _interrupt_again(unraisable) -> None:
    """`sys.unraisablehook`: a KeyboardInterrupt dropped where it was raised is raised again in the main thread.

    Python runs a signal's handler wherever the main thread is, and JAX's garbage-collection callback (run at every
    collection, often while modules import) is often there: Ctrl-C's KeyboardInterrupt was raised in it, printed as
    "Exception ignored in: <function _xla_gc_callback>", and the command went on (in 9 of 32 Ctrl-Cs 0.6-1.2 s into
    jaxood.evaluate, which wrote its whole report and exited 0). The signal is simulated again a moment later, from
    a thread, once this hook has returned (simulated here, its handler ran in this hook, which dropped it too): the
    handler then runs where the main thread is, out of the callback, or in a later one, which comes back here.

    A `StoppedAtOnce` dropped so (an evaluation's stop: 3, then 2, of 21 SIGTERMs 1-3 s into jaxood.evaluate) is
    kept by its handler and raised again before the next batch or the report (`jaxood.preemption.raise_if_stopped`):
    it is not said here, where its traceback came before the stop's own line. Any other exception goes to the hook
    there was."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and not sys.is_finalizing():
        again = threading.Timer(INTERRUPT_AGAIN_SECONDS, _thread.interrupt_main)
        again.daemon = True  # an exit meanwhile does not wait for it
        again.start()
    elif not isinstance(unraisable.exc_value, StoppedAtOnce):
        _unraisable_before(unraisable)


INTERRUPT_AGAIN_SECONDS = 0.01  # how long after a dropped Ctrl-C it is simulated again (`_interrupt_again`)


# What a Ctrl-C kept of a command stopped as it started, before its own handler ran (`say_a_stop_while_starting`).
STARTING_KEPT = (
    "It stopped as it started (importing its modules, reading its flags), before any work: nothing was written."
)


def say_a_stop_while_starting() -> None:
    """A jaxood command (`python -m jaxood.<command>`) stopped by Ctrl-C before its own handler runs
    (`report_user_errors`: most often as its modules import, 1.8 s of jaxood.train's start here) ends on
    `INTERRUPTED` and `STARTING_KEPT` with `INTERRUPTED_STATUS`, as a later Ctrl-C does, where it ended on Python's
    traceback through the imports (`sys.excepthook`, `_stopped_while_starting`); once that handler runs, the hook is
    Python's again (`_started`). Other programs that import jaxood keep their hook."""
    global _excepthook_before
    if _a_jaxood_command_starts() and sys.excepthook is not _stopped_while_starting:
        _excepthook_before, sys.excepthook = sys.excepthook, _stopped_while_starting


_excepthook_before = sys.__excepthook__


def _started() -> None:
    """The command's own handler runs (`report_user_errors`): a Ctrl-C that escapes it from now on (a second one as
    it says the first) is no stop as it started, which wrote nothing, and gets Python's hook back."""
    if sys.excepthook is _stopped_while_starting:
        sys.excepthook = _excepthook_before


def _a_jaxood_command_starts() -> bool:
    """Whether `python -m jaxood.<command>` is importing the package: Python holds `-m` as `sys.argv[0]` until it has
    found the module, which follows `-m` (`-m name` or `-mname`) just before the command's own arguments."""
    if sys.argv[:1] != ["-m"] or len(sys.orig_argv) < len(sys.argv) + 1:
        return False
    return sys.orig_argv[-len(sys.argv)].removeprefix("-m").startswith("jaxood.")


def _stopped_while_starting(kind, value, trace) -> None:
    """`sys.excepthook` of a jaxood command: a Ctrl-C that no handler caught (`_from_a_ctrl_c`) says `STARTING_KEPT` and
    leaves as a command's handler leaves after a stop (`exit_with`, at once: an XLA start it interrupted may run on in
    a thread of its own); `JAXOOD_TRACEBACK=1` shows where it was, and any other exception is said by the hook there
    was."""
    if _from_a_ctrl_c(value) and not os.environ.get("JAXOOD_TRACEBACK"):
        print(f"{INTERRUPTED} {STARTING_KEPT}", file=sys.stderr, flush=True)
        exit_with(AtOnce(INTERRUPTED_STATUS))
    _excepthook_before(kind, value, trace)


def _from_a_ctrl_c(err: BaseException | None) -> bool:
    """Whether `err` is a KeyboardInterrupt or was raised from one: a compiled module whose import it interrupted
    raises `ImportError: initialization failed` from it (pybind11's: tensorstore's as orbax imports it, seen 1.2-1.3 s
    into jaxood.train)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


# A command whose output's reader left (`| head` that read its lines): its exit status, a shell's for a command
# stopped by SIGPIPE, as Unix tools stop there.
OUTPUT_CLOSED_STATUS = 141


def output_closed(stream=None) -> bool:
    """Whether no one reads `stream` (sys.stdout) any more: a pipe whose reading end closed, or a terminal that hung
    up. False for a stream without a file descriptor (one a caller replaced)."""
    try:
        poll = select.poll()
        poll.register((stream or sys.stdout).fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        return False


# What to do about files or folders this user may not read (a model's or a dataset's copy made with another user's
# umask): said by a PermissionError that reaches a command, and by the data sources for the folders they cannot list.
READ_PERMISSION_FIX = "Their owner can let this user read them: `chmod -R a+rX` on the folder that holds them."


class AtOnce(int):
    """An exit status after which `exit_with` exits at once: the command was stopped by a signal where it was."""


def report_user_errors(main: Callable[[list[str]], Any], kept: str) -> Callable[[list[str]], Any]:
    """`main` for a command line: a `UserError`, a `PermissionError` (a file this user may not read or write), or a
    key the config lacks (`missing_config_key`), prints `error: <message>` on stderr and returns exit status 1; Ctrl-C
    (KeyboardInterrupt: before training, where it was a traceback of whatever was running) prints `INTERRUPTED`
    followed by `kept`, what the stop kept of the command's work (each command's own: one message for all spoke of
    a training run's checkpoint after a dataset's preparation), and returns `INTERRUPTED_STATUS`, as a shell
    reports a command stopped by SIGINT. Ctrl-C and a `StoppedAtOnce`
    stopped the command by a signal where it was: their status is `AtOnce`. Output whose reader left (`| head`
    that read its lines) stops the command quietly with `OUTPUT_CLOSED_STATUS`, as Unix tools stop there: its
    failed print was a BrokenPipeError's traceback (training and evaluation save and go on writing to a file
    instead, `jaxood.preemption`)."""

    def guarded(argv: list[str]) -> Any:
        _started()
        _escape_unencodable_output()
        try:
            try:
                status = main(argv)
            except (KeyError, AttributeError) as err:
                if (missing := missing_config_key(err)) is None:
                    raise
                raise missing from err
            sys.stdout.flush()  # output to a closed pipe fails here, not in the interpreter's exit
            return status
        except (UserError, KeyboardInterrupt, PermissionError) as err:
            if os.environ.get("JAXOOD_TRACEBACK"):
                raise
            if isinstance(err, KeyboardInterrupt):
                print(f"{INTERRUPTED} {kept}", file=sys.stderr, flush=True)
                return AtOnce(INTERRUPTED_STATUS)
            # A file this user may not read or write: the system's refusal, not jaxood's bug, so no traceback.
            message = (
                f"{err.filename}: {err.strerror}. {READ_PERMISSION_FIX}" if isinstance(err, PermissionError) else err
            )
            print(f"error: {message}\n(JAXOOD_TRACEBACK=1 shows where it was raised)", file=sys.stderr, flush=True)
            return AtOnce(1) if isinstance(err, StoppedAtOnce) else 1
        except Exception as err:  # a bug: its traceback, as Python prints it; in a job, `exit_with` then leaves it
            if isinstance(err, BrokenPipeError) and output_closed():
                # What is left in the buffer goes nowhere, not to a failed flush as the interpreter exits.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return OUTPUT_CLOSED_STATUS
            if not _in_a_job():
                raise
            traceback.print_exc()
            jax = sys.modules["jax"]
            print(
                f"error: host {jax.process_index()} of {jax.process_count()} of a multi-host job stopped on the error "
                "above. Where a collective failed (a connection closed by a peer), another host stopped first: its "
                "output says why.",
                file=sys.stderr,
                flush=True,
            )
            return 1

    return guarded


def _escape_unencodable_output() -> None:
    """A command's output writes what its encoding cannot hold as escapes (`\\udce9`), as Python's stderr does, not
    failing on it: a file named in another encoding than UTF-8 (an archive from Windows: Python holds its bytes as
    surrogates), said in a log line, stopped the run with a traceback on a UTF-8 terminal, and any name outside
    ASCII did under an ASCII locale."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # a TextIOWrapper; not a stream a caller replaced with its own
            stream.reconfigure(errors="backslashreplace")


def exit_with(status: int) -> NoReturn:
    """A command line's exit with `status` (`report_user_errors`'): `sys.exit`, but after a stop by a signal
    (`AtOnce`) at once, without the interpreter's finalisation. An XLA compile that the signal's exception
    interrupted runs on in a thread of its own, and finalising while it ran crashed with "Fatal Python error:
    Segmentation fault" after the message (jax 0.10.2 on CPU: Ctrl-C as the train step compiled, SIGTERM 2 s
    into jaxood.evaluate, either around a bare jit compile); the run's `finally` and `with` blocks have all run
    by then. A host of a multi-host job that failed leaves the job first, and at once where the other hosts do not
    end too (`_left_the_job`)."""
    left = not status or not _in_a_job() or _left_the_job()  # status None: main returned nothing, as on success
    if isinstance(status, AtOnce) or not left:
        logging.shutdown()  # absl's and Python's log handlers, flushed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


LEAVE_SECONDS = 10.0  # how long a host that failed waits for the other hosts of its job to end too


def _in_a_job() -> bool:
    """Whether this process joined a multi-host job (`jaxood.distributed`); JAX is not imported to find out."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def _left_the_job(seconds: float = LEAVE_SECONDS) -> bool:
    """After an error, a host of a multi-host job leaves it through JAX's shutdown barrier, as at the end of a run,
    where every host gets there within `seconds`: they all stopped together (a preemption, a NaN loss), or the
    others had finished. False where they did not: the caller exits at once. Waiting there for hosts that were
    waiting for this one in a collective (a model or dataset missing on this host alone) hung the job until
    JAX's shutdown timeout, 5 minutes, and then aborted every host; exiting, this host closes its connections, and
    the others' collectives fail at once ("... another task died; see the other task logs")."""
    import jax

    left = threading.Event()

    def leave() -> None:
        try:
            jax.distributed.shutdown()
        except Exception:  # the barrier failed: the exit at once follows
            return
        left.set()

    threading.Thread(target=leave, daemon=True).start()  # the barrier has JAX's timeout alone: not waited out
    try:
        return left.wait(seconds)
    except KeyboardInterrupt:  # Ctrl-C while waiting: at once
        return False
