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
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxood import distributed
from jaxood.cache import writable_folder_problem
from jaxood.errors import InvalidInput

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
def holding(workdir: str):
    """`workdir` (made if missing) locked by this run's first host for the block; every host raises `InvalidInput`
    when another run holds it. Within a block holding it already (an evaluation inside training) it does nothing."""
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
        yield
    except BaseException:
        if made and fd is not None:
            _remove_if_unused(workdir)
        raise
    finally:
        _held.discard(key)
        if fd is not None:
            os.close(fd)  # the only descriptor of the locked file: closing it drops the lock


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
