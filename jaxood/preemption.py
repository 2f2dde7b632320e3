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

Ctrl-C (SIGINT) in a one-process run does the same: the step that ends next
saves and the run stops, so an interactive run stopped by hand loses nothing; a
second Ctrl-C stops it at once (Python's KeyboardInterrupt, which the command line reports in one line,
`jaxood.errors.INTERRUPTED`).

During an evaluation, which writes its report only at its end, either signal
stops a one-process run at once with `StopsAtOnce`'s `StoppedAtOnce` (a `Preempted`), saying what
was kept and what to rerun (it died with a bare "Terminated"). A signal the
process was started to ignore (`cmd &` in a script ignores Ctrl-C) stays ignored.
"""

from __future__ import annotations

import signal
import threading

import jax

from jaxood.errors import StoppedAtOnce

SIGNALS = {signal.SIGTERM: "a preemption notice (SIGTERM)", signal.SIGINT: "Ctrl-C (SIGINT)"}


def _handle(handler) -> dict:
    """`handler` for each of SIGNALS this process may handle (one process, in the main thread, where Python runs
    handlers; not one it was started to ignore); the handlers they replace."""
    if jax.distributed.is_initialized() or threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}


def _restore(previous: dict, sig) -> None:
    handler = previous.pop(sig, signal.SIG_DFL)
    # None: a handler not installed from Python, which Python cannot put back
    signal.signal(sig, signal.SIG_DFL if handler is None else handler)


class _Handling:
    """A subclass's `_on_signal` handles SIGNALS within the block (where `_handle` may install it); the previous
    handlers are put back after it."""

    def __enter__(self):
        self._previous = _handle(self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig in list(self._previous):
            _restore(self._previous, sig)


class PreemptionNotice(_Handling):
    """`with PreemptionNotice() as notice:` ... `notice.reached(step)` is True at the step to save and stop at, and
    `notice.reason` then says what stopped it."""

    def __enter__(self) -> PreemptionNotice:
        import orbax.checkpoint as ocp  # here: jaxood.evaluate imports this module, and needs no orbax

        self._reached_preemption = ocp.multihost.reached_preemption
        self.reason = ""  # what stops the run, once a signal came
        return super().__enter__()

    def _on_signal(self, signum, frame) -> None:
        self.reason = self.reason or SIGNALS[signum]
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            _restore(self._previous, signal.SIGINT)
            print("Ctrl-C: saving at the end of this step, then stopping (Ctrl-C again stops at once)", flush=True)

    def reached(self, step: int) -> bool:
        if not self.reason and self._reached_preemption(step):
            self.reason = SIGNALS[signal.SIGTERM]
        return bool(self.reason)


class StopsAtOnce(_Handling):
    """`with StopsAtOnce(what):` SIGTERM or Ctrl-C raise `StoppedAtOnce("stopped by <signal> <what>")` at once.

    Python runs a handler wherever the main thread is, a callback included, and there it may swallow the
    handler's exception: in JAX's garbage-collection callback it printed "Exception ignored in
    <function _xla_gc_callback>" and the evaluation went on to write its report (2 of 30 SIGTERMs while
    jaxood.evaluate compiled). So the stop is kept too, and `raise_if_stopped` raises it again where the work
    asks, before each batch and before the report.
    """

    pending = ""  # the message of a stop whose exception has not ended the block yet

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> StopsAtOnce:
        StopsAtOnce.pending = ""
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        StopsAtOnce.pending = ""
        super().__exit__(*exc)

    def _on_signal(self, signum, frame) -> None:
        StopsAtOnce.pending = f"stopped by {SIGNALS[signum]} {self.what}"
        raise StoppedAtOnce(StopsAtOnce.pending)


def raise_if_stopped() -> None:
    """The `StoppedAtOnce` of a signal within `StopsAtOnce` whose exception was swallowed where it was raised."""
    if StopsAtOnce.pending:
        raise StoppedAtOnce(StopsAtOnce.pending)
