"""jaxood's on-disk caches (text features, TFDS labels): where they live and how they are written; files written
whole or not at all (the caches, a workdir's config and metrics); and whether a folder (a cache's, a workdir) can be
written at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable

import numpy as np

from jaxood.errors import InvalidInput, NotSaved, write_fix


def _default_cache() -> str:
    """$JAXOOD_CACHE; else `jaxood` in the user's cache folder, `$XDG_CACHE_HOME` (an absolute path, as the XDG spec
    reads it) or `~/.cache`, where pip and Hugging Face's hub keep theirs too (a cluster may point it off a small home
    quota). An empty variable counts as unset, as a shell variable not set leaves it: JAXOOD_CACHE="" kept no text
    features and put the TFDS label cache under the current folder."""
    if own := os.environ.get("JAXOOD_CACHE"):
        return os.path.expanduser(own)
    users = os.environ.get("XDG_CACHE_HOME", "")
    return os.path.join(users if os.path.isabs(users) else os.path.expanduser("~/.cache"), "jaxood")


# What jaxood can recompute goes here unless the caller names a place.
DEFAULT_CACHE = _default_cache()


def nearest_existing(path: str, exists: Callable[[str], bool] = os.path.lexists) -> str:
    """`path`, or the nearest folder it lies in, that `exists` (anything, or a folder with `os.path.isdir`); the
    file system's root at the latest."""
    while not exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def can_hold_a_folder(path: str) -> bool:
    """`path` is a folder jaxood can write, or can be made one: its nearest existing ancestor is such a folder."""
    path = nearest_existing(os.path.abspath(os.path.expanduser(path)))
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def writable_folder_problem(path: str) -> str:
    """Why `path` cannot be a folder this user writes, once made (with its parents) if missing; "" when it can.
    Making it asks the file system, where `os.access` alone says yes to what it refuses (an NFS mount squashing root,
    /proc)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        return err.strerror or str(err)
    return "" if can_hold_a_folder(path) else "this user may not write it"


def load_npy(path: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The array cached at `path`, or None when there is none to use: no file, or one that is damaged (cut short by
    a full disk, edited) or of another shape. A damaged file is said and then computed again, as a missing one is:
    it stopped the run before, though the cache holds nothing that cannot be recomputed."""
    if not os.path.exists(path):
        return None
    try:
        array = np.load(path)
    except (OSError, ValueError, EOFError) as err:
        problem = f"cannot be read ({err})"
    else:
        if array.shape == tuple(shape):
            return array
        problem = f"holds shape {array.shape}, not {tuple(shape)}"
    print(f"cache file {path} {problem}: computing it again and replacing it", flush=True)
    return None


@contextlib.contextmanager
def write_whole(path: str, mode: str = "w"):
    """A file to write `path` through, which replaces `path` only once the block ends without error: readers (other
    hosts, a resumed run) see the old file or the new one, never a part (a kill or a full disk mid-write). Each
    writer has its own temporary file, so hosts writing the same path at once do not mix their bytes."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, partial = tempfile.mkstemp(".partial", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.chmod(partial, 0o644)  # mkstemp's 0600 would hide the file from its other users
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


# What a Ctrl-C kept of a command whose work is a file written through `write_out` (`report_user_errors`).
OUT_KEPT = "--out's file is written whole or not at all: one there before is as it was."


@contextlib.contextmanager
def write_out(path: str, what: str, mode: str = "w"):
    """`write_whole(path)` for a command's `--out`: where it cannot be written (a folder this user may not write, a
    full disk, a path under a file or naming a folder), `what` is refused naming the file, the reason and the fix,
    where it was a traceback, or a folder this user may not write said as one it may not read. An empty `--out` (a
    shell variable not set) wrote nothing, unsaid, or failed naming no file."""
    if not path.strip():
        empty = "--out is empty (a shell variable that is not set, as in --out=$FILE?)"
        raise InvalidInput(f"{empty}: give a file's path for {what}")
    try:
        with write_whole(path, mode) as f:
            yield f
    except OSError as err:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            problem, fix = "it is a folder", "Give a file's path as --out"
        elif not os.path.isdir(above := nearest_existing(folder)):  # the system's "File exists" or "Not a directory"
            problem, fix = f"{above} is a file", "Give --out in a folder"
        else:
            problem, fix = err.strerror or str(err), f"{write_fix(err, folder)}, or give another --out"
        raise NotSaved(f"{what} could not be written to {path} ({problem}). {fix}") from err


def save_npy(path: str, array: np.ndarray) -> None:
    """`np.save` whole or not at all (`write_whole`): every host of a pod may write the same cache file at once,
    and another may be loading it. A cache that cannot be written (a full disk, a read-only folder) is said, and
    the run goes on: it stopped the run before, though it only saves computing the array again next time."""
    try:
        with write_whole(path, "wb") as f:
            np.save(f, array)
    except OSError as err:
        print(
            f"cache file {path} could not be written ({err.strerror or err}): it is computed again next time",
            flush=True,
        )
