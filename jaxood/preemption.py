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
"""

from __future__ import annotations

import signal
import threading

import jax
import orbax.checkpoint as ocp


class PreemptionNotice:
    """`with PreemptionNotice() as notice:` ... `notice.reached(step)` is True at the step to save and stop at."""

    def __enter__(self) -> PreemptionNotice:
        self.signalled = False
        self._own = not jax.distributed.is_initialized() and threading.current_thread() is threading.main_thread()
        if self._own:
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def _note(self, signum, frame) -> None:
        self.signalled = True

    def reached(self, step: int) -> bool:
        return self.signalled or ocp.multihost.reached_preemption(step)

    def __exit__(self, *exc) -> None:
        if self._own:  # None: a handler not installed from Python, which Python cannot put back
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)
