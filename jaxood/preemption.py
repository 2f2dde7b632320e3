"""A preemption notice (SIGTERM) during training: save at the next step and stop, so a rerun loses no step.

Schedulers that take machines back send SIGTERM first: a preemptible TPU VM or GPU
node, SLURM at a job's time limit (or earlier with `--signal=TERM@<seconds>`, as
`launch/slurm_gpu.sbatch` asks), `kill`. Without this a run lost every step since
its last checkpoint (`checkpoint_every`, 500 by default).

- One process: a SIGTERM handler notes the notice; the step that ends after it
  saves and the run stops.
- A job joined with `jax.distributed` (see `jaxood.distributed`): JAX's
  preemption service catches SIGTERM on any host and the hosts agree on one step
  at which all of them save (`orbax.checkpoint.multihost.reached_preemption`,
  asked at every step with the same step numbers on every host); a host saving
  alone would leave the others waiting in the collective save.

The handler is installed only around the training loop (in the main thread,
where Python runs signal handlers); before it SIGTERM stops the process as
usual: there is no progress since the last checkpoint to save yet.

Ctrl-C (SIGINT) does the same: the step that ends next saves and the run stops,
so an interactive run stopped by hand loses nothing; a second Ctrl-C stops it at
once (Python's KeyboardInterrupt, which the command line reports in one line,
`jaxood.errors.INTERRUPTED`). A host of a multi-host job sends itself SIGTERM at
the first, so JAX's preemption service stops every host at one step (before,
the host stopped alone, unsaved, and the others failed in their collectives).

A closed terminal or output pipe does the same: an ssh connection that drops (a
laptop gone to sleep) sends SIGHUP to a command in a terminal; a command without
one (`ssh host cmd`, or piped to a `tee` that ended) finds its next print failing
(EPIPE; EIO on a terminal that hung up). SIGHUP killed the run, and the failed
print stopped it before it saved: every step since its last checkpoint was lost.
Now the output from then on goes to `HANGUP_LOG` in the workdir (`host<i>.`
before the name on the other hosts of a multi-host job), after a line with the
time and the cause, and the run saves and stops as at a preemption notice; a host
of a multi-host job sends itself SIGTERM, so JAX's preemption service stops every
host at one step. `nohup` (as `DETACH=1` of the TPU launcher uses) ignores
SIGHUP, and an ignored signal stays ignored.

During an evaluation, which writes its report only at its end, SIGTERM, Ctrl-C
or a closed terminal (the output moved as above) stops a one-process run at
once with `StopsAtOnce`'s `StoppedAtOnce` (a `Preempted`), saying what was kept
and what to rerun (it died with a bare "Terminated"). In a multi-host job one
host cannot stop alone: it left the others failing in the evaluation's
collectives, with no report (or, at Ctrl-C, waiting 100 s in JAX's shutdown
barrier before they aborted). There SIGTERM or Ctrl-C on any host stops every
host before one batch, which JAX's preemption service agrees on as for a
training step; a host whose terminal closes goes on evaluating with the others,
its output moved, and the job writes its report (a pod launched in the
foreground sees Ctrl-C on the laptop as closed connections). A signal the
process was started to ignore (`cmd &` in a script ignores Ctrl-C) stays
ignored.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils

from jaxood.errors import POSIX_ONLY, StoppedAtOnce

if not hasattr(signal, "SIGHUP"):  # Windows
    raise ImportError(POSIX_ONLY)
SIGNALS = {
    signal.SIGTERM: "a preemption notice (SIGTERM)",
    signal.SIGINT: "Ctrl-C (SIGINT)",
    signal.SIGHUP: "a closed terminal (SIGHUP)",
}
_sync_id = 0  # the id this process last gave JAX's preemption sync point: training's step, then one per batch
HANGUP_LOG = "after_hangup.log"  # in the workdir: a run's output once its terminal or output pipe closed
_CLOSED = (errno.EPIPE, errno.EIO)  # a print to a pipe no one reads any more, or to a terminal that hung up


def _handle(handler, signals) -> dict:
    """`handler` for each of `signals` this process may handle (in the main thread, where Python runs handlers;
    not one it was started to ignore); the handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN}


def _reached_sync_point(step_id: int | None = None) -> bool:
    """In a job joined with `jax.distributed`: whether every host has reached the step (training's `step_id`; None,
    the id after the last: an evaluation's batches) at which JAX's preemption service, told of a SIGTERM on any host,
    agreed that all of them stop. The ids grow, and each call has the same on every host: each host calls it at the
    same points, training's steps and then its evaluation's batches."""
    global _sync_id
    _sync_id = _sync_id + 1 if step_id is None else step_id
    if not jax.distributed.is_initialized():
        return False
    try:
        return multihost_utils.reached_preemption_sync_point(_sync_id)
    except RuntimeError:  # the service is off (`jax_enable_preemption_service`): nothing is passed on
        return False


def _restore(previous: dict, sig) -> None:
    handler = previous.pop(sig, signal.SIG_DFL)
    # None: a handler not installed from Python, which Python cannot put back
    signal.signal(sig, signal.SIG_DFL if handler is None else handler)


class _Handling:
    """Within the block a subclass's `_on_signal` handles SIGNALS (where `_handle` may install it; in a job joined
    with `jax.distributed`, all but SIGTERM, which JAX's preemption service takes), and its `_on_closed` a
    closed terminal: SIGHUP, or a print failing as one to a closed pipe or terminal fails. That moves the output to
    `HANGUP_LOG` in `workdir` first. The previous handlers and streams are put back after the block."""

    def __init__(self, workdir: str):
        self.workdir = workdir

    def __enter__(self):
        self._moved = False  # the output went to HANGUP_LOG: once, however many prints fail after
        self._noticed = ""  # in a multi-host job: what this host passed on to JAX's preemption service
        self._streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = (_Printed(stream, self._output_closed) for stream in self._streams)
        multi_host = jax.distributed.is_initialized()  # JAX's preemption service takes SIGTERM there
        self._previous = _handle(self._signalled, [signal.SIGHUP, signal.SIGINT] if multi_host else SIGNALS)
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout, sys.stderr = self._streams
        for sig in list(self._previous):
            _restore(self._previous, sig)

    def _signalled(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self._output_closed(SIGNALS[signum])
        else:
            self._on_signal(signum)

    def _stop_on_every_host(self, what: str) -> None:
        """A host of a multi-host job sends itself SIGTERM: JAX's preemption service takes it and every host stops at
        one step or batch (a host stopping alone left the others waiting). `what` is the reason this host says."""
        self._noticed = self._noticed or what
        os.kill(os.getpid(), signal.SIGTERM)

    def _output_closed(self, what: str) -> None:
        if not self._moved:
            self._moved = True
            _move_output(self.workdir, what)
            self._on_closed(what)


def _move_output(workdir: str, what: str) -> None:
    """The process's output and errors to `HANGUP_LOG` in `workdir` (the host's own on the other hosts of a job),
    after a line with the time and `what` moved them; where they go to a file, they stay."""
    host = f"host{jax.process_index()}." if jax.process_index() else ""
    try:
        fd = os.open(os.path.join(workdir, host + HANGUP_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # a workdir gone read-only, or not made yet: the output is lost, the steps are not
        fd = os.open(os.devnull, os.O_WRONLY)
    os.write(fd, f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {what}; the output from here on:\n".encode())
    for standard in (1, 2):
        if not _is_file(standard):
            os.dup2(fd, standard)
    os.close(fd)


def _is_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


class _Printed:
    """sys.stdout or sys.stderr within `_Handling`: a write or flush that fails as one to a closed pipe or terminal
    fails calls `closed` (which moves the output elsewhere) and is made again."""

    def __init__(self, stream, closed):
        self._stream, self._closed = stream, closed

    def _again(self, method: str, *args):
        try:
            return getattr(self._stream, method)(*args)
        except OSError as err:
            if err.errno not in _CLOSED:
                raise
            self._closed(f"a closed terminal or pipe (printing to it failed: {err.strerror})")
            return getattr(self._stream, method)(*args)

    def write(self, text: str) -> int:
        return self._again("write", text)

    def flush(self) -> None:
        self._again("flush")

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class PreemptionNotice(_Handling):
    """`with PreemptionNotice(workdir) as notice:` ... `notice.reached(step)` is True at the step to save and stop
    at, and `notice.reason` then says what stopped it: a signal, or a closed terminal (the output then goes to
    `HANGUP_LOG` in `workdir`)."""

    def __enter__(self) -> PreemptionNotice:
        self.reason = ""  # what stops the run, once a signal came
        return super().__enter__()

    def _on_signal(self, signum) -> None:
        self._stop_at_step(SIGNALS[signum])
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            _restore(self._previous, signal.SIGINT)
            print("Ctrl-C: saving at the end of a step, then stopping (Ctrl-C again stops at once)", flush=True)

    def _on_closed(self, what: str) -> None:
        self._stop_at_step(what)

    def _stop_at_step(self, what: str) -> None:
        """The run stops at the end of this step; in a multi-host job every host's, at one step."""
        if jax.distributed.is_initialized():
            self._stop_on_every_host(what)
        else:
            self.reason = self.reason or what

    def reached(self, step: int) -> bool:
        if not self.reason and _reached_sync_point(step):
            self.reason = self._noticed or SIGNALS[signal.SIGTERM]
        return bool(self.reason)


class StopsAtOnce(_Handling):
    """`with StopsAtOnce(workdir, what):` SIGTERM, Ctrl-C or a closed terminal raise `StoppedAtOnce("stopped by
    <what stopped it> <what>")` at once. In a multi-host job SIGTERM or Ctrl-C raise it on every host at one
    `raise_if_stopped` (before one batch, or before the report), and a closed terminal does not: see `_on_closed`.

    Python runs a handler wherever the main thread is, a callback included, and there it may swallow the
    handler's exception: in JAX's garbage-collection callback it printed "Exception ignored in
    <function _xla_gc_callback>" and the evaluation went on to write its report (2 of 30 SIGTERMs while
    jaxood.evaluate compiled). So the stop is kept too, and `raise_if_stopped` raises it again where the work
    asks, before each batch and before the report; the one dropped is not said (`jaxood.errors.keep_interrupts`).
    """

    pending = ""  # the message of a stop whose exception has not ended the block yet
    active = None  # the StopsAtOnce whose block the process is in, for `raise_if_stopped` in a multi-host job

    def __init__(self, workdir: str, what: str):
        super().__init__(workdir)
        self.what = what

    def __enter__(self) -> StopsAtOnce:
        StopsAtOnce.pending, StopsAtOnce.active = "", self
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        StopsAtOnce.pending, StopsAtOnce.active = "", None
        super().__exit__(*exc)

    def _on_signal(self, signum) -> None:
        if not jax.distributed.is_initialized():
            self._stop(SIGNALS[signum])
            return
        self._stop_on_every_host(SIGNALS[signum])  # Ctrl-C: JAX's preemption service takes SIGTERM there
        _restore(self._previous, signal.SIGINT)  # a second Ctrl-C stops this host at once
        print("Ctrl-C: every host stops before its next batch (Ctrl-C again stops this host at once)", flush=True)

    def _on_closed(self, what: str) -> None:
        """A one-process run stops; a host of a multi-host job goes on: stopping alone, it left the other hosts
        waiting in the evaluation's collectives, which then failed (they crashed, with no report)."""
        if jax.distributed.is_initialized():
            print("this host goes on evaluating: one host of a multi-host job cannot stop alone", flush=True)
        else:
            self._stop(what)

    def _stop(self, by: str) -> None:
        StopsAtOnce.pending = f"stopped by {by} {self.what}"
        raise StoppedAtOnce(StopsAtOnce.pending)


def raise_if_stopped() -> None:
    """The `StoppedAtOnce` of a signal within `StopsAtOnce` whose exception was swallowed where it was raised; in a
    multi-host job, that of SIGTERM or Ctrl-C on any host, on every host at the same call (each host makes the
    same calls: before each batch, and before the report)."""
    if StopsAtOnce.pending:
        raise StoppedAtOnce(StopsAtOnce.pending)
    if (block := StopsAtOnce.active) is not None and _reached_sync_point():
        block._stop(block._noticed or SIGNALS[signal.SIGTERM])
