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
where Python runs signal handlers); before and after it SIGTERM stops the
process as usual: there is no progress since the last checkpoint to save yet,
or the final one is already saved.

Ctrl-C (SIGINT) in a one-process run does the same: the step that ends next
saves and the run stops, so an interactive run stopped by hand loses nothing; a
second Ctrl-C stops it at once (Python's KeyboardInterrupt), as before.
"""

from __future__ import annotations

import signal
import threading

import jax
import orbax.checkpoint as ocp


class PreemptionNotice:
    """`with PreemptionNotice() as notice:` ... `notice.reached(step)` is True at the step to save and stop at, and
    `notice.reason` then says what stopped it."""

    SIGNALS = {signal.SIGTERM: "a preemption notice (SIGTERM)", signal.SIGINT: "Ctrl-C (SIGINT)"}

    def __enter__(self) -> PreemptionNotice:
        self.reason = ""  # what stops the run, once a signal came
        self._own = not jax.distributed.is_initialized() and threading.current_thread() is threading.main_thread()
        self._previous = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS} if self._own else {}
        return self

    def _note(self, signum, frame) -> None:
        self.reason = self.reason or self.SIGNALS[signum]
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            self._restore(signal.SIGINT)
            print("Ctrl-C: saving at the end of this step, then stopping (Ctrl-C again stops at once)", flush=True)

    def reached(self, step: int) -> bool:
        if not self.reason and ocp.multihost.reached_preemption(step):
            self.reason = self.SIGNALS[signal.SIGTERM]
        return bool(self.reason)

    def _restore(self, sig) -> None:
        previous = self._previous.pop(sig, signal.SIG_DFL)
        # None: a handler not installed from Python, which Python cannot put back
        signal.signal(sig, signal.SIG_DFL if previous is None else previous)

    def __exit__(self, *exc) -> None:
        for sig in list(self._previous):
            self._restore(sig)
