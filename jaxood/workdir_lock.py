"""One training run per workdir at a time.

Two runs in one workdir (the same command started twice, in two terminals or
two jobs) wrote over each other's checkpoints, `metrics.jsonl` and report. The
first host of a run holds an exclusive `flock` on `WORKDIR/.jaxood.lock` while
it trains and evaluates; the operating system drops it when the process ends,
killed included, so a crashed run leaves no stale lock. The file names the
holder (`pid N on HOST`) for the error a second run gets. On a file system
without locks (some NFS mounts) a run says so and goes on unlocked.

`jaxood.evaluate` holds it too, since it writes the report; inside training
(which holds it already) its evaluation takes no second lock. A workdir the
run made is removed again if the run stops before writing anything in it (a
setting refused once the weights loaded), so a refused run leaves no folder.

A multi-host training run also checks that its workdir is one folder every host
sees (`shared=True`): every host writes its share of each checkpoint there and
reads them all back on resume. With a local path on each host (`/tmp/run`) each
host trained in its own folder, and the job hung at the first checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxood import distributed
from jaxood.cache import writable_folder_problem
from jaxood.errors import POSIX_ONLY, InvalidInput

try:
    import fcntl
except ModuleNotFoundError as err:  # Windows
    raise ImportError(POSIX_ONLY) from err

LOCK_FILE = ".jaxood.lock"
_held: set[str] = set()  # the workdirs this process's run holds (every host records it, the first locks)


def _lock(workdir: str) -> tuple[int | None, str]:
    """(the locked file, "") for this process, or (None, who holds it; "" on a file system without locks)."""
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 256).decode(errors="replace").strip()
        os.close(fd)
        return None, holder or "another process"
    except OSError as err:
        os.close(fd)
        print(f"{workdir} cannot be locked ({err}): nothing stops a second run from using it at the same time")
        return None, ""
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd, ""


@contextlib.contextmanager
def holding(workdir: str, shared: bool = False):
    """`workdir` (made if missing) locked by this run's first host for the block; every host raises `InvalidInput`
    when another run holds it, or, with `shared` in a multi-host job, when it is not one folder every host sees.
    Within a block holding it already (an evaluation inside training) it does nothing."""
    key = os.path.realpath(workdir)
    if key in _held:
        yield
        return
    made = not os.path.lexists(workdir)
    fd, holder, problem = None, "", writable_folder_problem(workdir)
    if not problem and distributed.is_first_host():
        try:
            fd, holder = _lock(workdir)
        except OSError as err:  # where `os.access` said yes (an NFS mount squashing root, /proc) and the file system no
            problem = err.strerror or str(err)
    if problem:
        raise InvalidInput(
            f"the workdir {workdir} cannot be used ({problem}): give a --workdir in a folder this user may write"
        )
    if jax.process_count() > 1 and multihost_utils.broadcast_one_to_all(np.int32(bool(holder))):
        holder = holder or "see the first host's error"
    if holder:
        raise InvalidInput(
            f"{workdir} is in use by another jaxood run ({holder}): two runs in one workdir write over each other's "
            "checkpoints and report. Wait for it to end or stop it, or use another --workdir."
        )
    _held.add(key)
    try:
        if shared and jax.process_count() > 1:
            _check_shared(workdir)
        yield
    except BaseException:
        if made and fd is not None:
            _remove_if_unused(workdir)
        raise
    finally:
        _held.discard(key)
        if fd is not None:
            os.close(fd)  # the only descriptor of the locked file: closing it drops the lock


SHARED_WAIT_S = 10  # how long a host looks for the first host's file: a network file system may show it late


def _check_shared(workdir: str) -> None:
    """Every host of the job sees a file the first host writes in `workdir`, or every host raises `InvalidInput`
    naming those that do not. A new name each time, which no host can have cached as missing."""

    def marker(token: int) -> str:
        return os.path.join(workdir, f".jaxood.shared.{token:x}")

    token = 0
    if distributed.is_first_host():
        token = int(np.random.default_rng().integers(1, 2**31))  # int32: what JAX's collectives carry
        try:
            with open(marker(token), "w", encoding="utf-8") as f:
                f.write(f"written by the first host, {socket.gethostname()}, to see that every host sees it\n")
        except OSError as err:  # said by every host below: a host raising alone would leave the others waiting
            print(f"{marker(token)} could not be written: {err}", flush=True)
            token = 0
    token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))  # after the first host wrote its file
    deadline = time.monotonic() + SHARED_WAIT_S
    while token and not (seen := os.path.exists(marker(token))) and time.monotonic() < deadline:
        time.sleep(0.2)
    every = distributed.every_host(np.array([bool(token) and seen]))[:, 0]
    if token and distributed.is_first_host():
        with contextlib.suppress(OSError):  # a file left behind is harmless; a host raising alone would hang the rest
            os.remove(marker(token))
    if not every.all():
        blind = ", ".join(str(h) for h in np.flatnonzero(~every))
        raise InvalidInput(
            f"the workdir {workdir} is not one folder every host sees: host(s) {blind} of {len(every)} do not see the "
            f"file the first host wrote in it. Every host writes its share of each checkpoint there and reads them "
            "back on resume: give a --workdir on a file system every host mounts at the same path (NFS, Filestore)"
        )


def _remove_if_unused(workdir: str) -> None:
    """Remove a workdir this run made when the run stopped with nothing in it but its lock (and empty folders, such
    as the checkpoints' before the first): a refused run left it behind. Removed while still locked: a run starting
    in it meanwhile is told it is in use."""
    for folder, _, files in os.walk(workdir):
        if any(folder != workdir or name != LOCK_FILE for name in files):
            return
    try:
        shutil.rmtree(workdir)
    except OSError:  # kept as it is: the error the run stops with says what went wrong
        pass
