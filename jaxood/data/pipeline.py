"""Sharded, prefetched input pipelines feeding jitted steps.

The batch of a training step is a pure function of `(seed, step)`: epoch `e`
is a seeded permutation of the example indices, step `s` takes the next
`global_batch` of them, and augmentation draws from a generator keyed by
(seed, epoch, example). So every host computes the same global batch, reads
only its own slice of it, and a resumed run sees exactly the batches an
uninterrupted run would. No TensorFlow: sources + PIL/NumPy ops in a thread
pool (PIL releases the GIL while decoding and resizing).

Batches are dicts of global `jax.Array`s sharded over the mesh's data axis:
`image` (B, S, S, 3) float32, `label` (B,) int32, `mask` (B,) bool (False for
evaluation padding and for undecodable images) and `index` (B,) int32 (the
source index, -1 for padding); with `caption_length`, also `text` (B, L) int32
tokenised captions of captioned sources (the toy world).
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import sys
import threading
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxood import distributed
from jaxood.data.preprocess import Compose, Undecodable, decode, load
from jaxood.errors import InvalidInput
from jaxood.memory import GiB, host_bytes
from jaxood.models.tokenizer import get_tokenizer, tokenize
from jaxood.progress import Progress

DATA_AXIS = "data"


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (a SLURM task's, a container's cpuset), not the machine's count,
    which `os.cpu_count()` gives (a SLURM task of 8 CPUs on a 128-core node: 128)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


LOADER_THREADS = min(16, 2 * usable_cpus())  # decoding threads per host (PIL releases the GIL)
DECODE_PROGRESS_MIN = 10_000  # a few-shot decode check this long reports progress (ImageNet's 16 shots: 16,000)


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices with the data axis."""
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def split_rows(mesh: Mesh | None = None) -> NamedSharding:
    """The sharding of a batch: its leading axis split over the data axis of `mesh` (the data mesh by default)."""
    return NamedSharding(mesh or data_mesh(), PartitionSpec(DATA_AXIS))


def every_device(mesh: Mesh | None = None) -> NamedSharding:
    """The sharding of weights and results: a whole copy on every device of `mesh` (the data mesh by default)."""
    return NamedSharding(mesh or data_mesh(), PartitionSpec())


# How a multi-host job's hosts come to place other values on every device, and the way on.
SAME_EVERYWHERE = (
    "Every host loads the model (config.model) and builds the method's parameters from its config itself: give every "
    "host the same model files and the same command"
)


def replicate(tree, mesh: Mesh | None = None):
    """`tree` on every device of `mesh` (`every_device`).

    Weights placed once this way are not sent again with every jitted call, as host arrays would be (a ViT-B/16's
    image tower is 345 MB a batch).

    In a multi-host job every host must pass the same tree: the hosts compare each array's name, shape and dtype,
    then a hash of its values (16 bytes an array), and where one differs every host stops on an error saying which
    arrays and hosts. Each host then copies its own arrays to its own devices. `jax.device_put` compared the values
    itself by gathering every host's copy of each array onto every device and host: for a moment the array times
    the host count in each device's memory (ViT-L/14's token embedding, 152 MB, on 64 hosts: 9.7 GB), the whole
    model times the host count through the network, and a failure that named no array.
    """
    if jax.process_count() > 1 and (
        said := distributed.layout_differences(tree) or distributed.value_differences(tree)
    ):
        raise InvalidInput(f"{said}. {SAME_EVERYWHERE}")
    sharding = every_device(mesh)
    return jax.tree.map(lambda leaf: place(leaf, sharding), tree)


def place(leaf, sharding: NamedSharding) -> jax.Array:
    """`leaf` as one array laid out by `sharding` over the job's devices: each device of this host gets its part of
    this host's copy (one explicit transfer each). Nothing is compared across hosts, as `jax.device_put` did by
    gathering every host's copy: the caller compares them first (`replicate`). An array on the devices already
    moves there from where it is."""
    if distributed.placed(leaf):
        return jax.device_put(leaf, sharding)
    host = np.asarray(leaf)
    copies = [jax.device_put(host[i], d) for d, i in sharding.addressable_devices_indices_map(host.shape).items()]
    return jax.make_array_from_single_device_arrays(host.shape, sharding, copies)


def check_batch(global_batch: int, mesh: Mesh, name: str = "global batch") -> None:
    """A global batch must shard evenly over the mesh's devices."""
    n = mesh.devices.size
    if global_batch % n:
        raise InvalidInput(
            f"{name} {global_batch} does not split over {n} devices: use a multiple of {n}, such as "
            + " or ".join(str(b) for b in (global_batch // n * n, global_batch // n * n + n) if b)
        )


def check_host_memory(
    global_batch: int, image_size: int, name: str, prefetch: int = 2, process_count: int | None = None
) -> None:
    """A loader holds `prefetch + 2` batches of float32 images on each host at once (the one in use, those
    prefetched, the one being read): more than the host's memory failed with NumPy's "Unable to allocate" traceback,
    or the system killed the process."""
    local = global_batch // (process_count or jax.process_count())
    held = (prefetch + 2) * local * image_size**2 * 3 * 4
    if held > (have := host_bytes()):
        raise InvalidInput(
            f"{name} {global_batch}: the loader holds {prefetch + 2} batches of {local} images of {image_size}x"
            f"{image_size} on each host at once, {held / GiB:.1f} GiB, more than this host's {have / GiB:.1f} GiB of "
            f"memory: lower {name}"
        )


def listed(undecodable: dict[int, str]) -> str:
    """The first five undecodable examples, `#index why`, and how many more."""
    items = sorted(undecodable.items())
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    return "; ".join(f"#{i} {why}" for i, why in items[:5]) + more


def on_host(process_index: int, process_count: int) -> str:
    """The words ` on host 1 of 4` after what one host saw, in a multi-host job; nothing with one host."""
    return f" on host {process_index} of {process_count}" if process_count > 1 else ""


def printable(err: Undecodable) -> str:
    """Why an example is undecodable, printable: a file name that is no UTF-8 (Python's surrogates) as \\udce9."""
    return str(err).encode("utf-8", "backslashreplace").decode()


def why_undecodable(source, index: int) -> str | None:
    """Why example `index` of `source` does not decode as a step reads it (None when it does)."""
    try:
        decode(source.read(int(index))[0])
    except Undecodable as err:
        return printable(err)
    return None


class DecodeCheck:
    """Whether examples of `source` decode, for `few_shot_indices`: a call over indices returns one bool each, the
    same on every host. Each host decodes its share (every `process_count`-th) on a thread pool and the hosts swap
    what they found; `found` keeps this host's undecodable examples with why, `total` counts every host's."""

    def __init__(self, source, num_threads: int | None = None, process_index=None, process_count=None):
        self.source = source
        self.num_threads = num_threads or LOADER_THREADS
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        self.found: dict[int, str] = {}
        self.total = 0

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        mine = np.asarray(indices)[self.process_index :: self.process_count]
        # ImageNet's 16,000 picks take 10-12 s on 2 cores from the page cache (`jaxood.bench.data`), more from a
        # network file system or a bucket: with progress from DECODE_PROGRESS_MIN (this host's share, shown by the
        # first host).
        progress = Progress("few-shot picks", len(mine), "images") if len(indices) >= DECODE_PROGRESS_MIN else None
        whys = []
        with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
            for why in pool.map(lambda i: why_undecodable(self.source, i), mine):
                whys.append(why)
                if progress:
                    progress.update()
        self.found.update((int(i), why) for i, why in zip(mine, whys) if why is not None)
        bad = np.zeros(len(indices), bool)
        bad[self.process_index :: self.process_count] = [why is not None for why in whys]
        if self.process_count > 1:
            bad = distributed.every_host(bad).any(axis=0)
        self.total += int(bad.sum())
        return ~bad


class Loader:
    """Batches of one source (restricted to `indices`) for training or evaluation; `name` is the global batch's
    setting, for its errors."""

    def __init__(
        self,
        source,
        transform: Compose,
        global_batch: int,
        indices: np.ndarray | None = None,
        seed: int = 0,
        mesh: Mesh | None = None,
        num_threads: int | None = None,
        prefetch: int = 2,
        process_index: int | None = None,
        process_count: int | None = None,
        caption_length: int = 0,
        name: str = "global batch",
    ):
        self.source, self.transform, self.seed = source, transform, seed
        if caption_length and not hasattr(source, "read_captioned"):
            raise InvalidInput(f"{type(source).__name__} has no captions; image-text training needs a captioned source")
        self.caption_length = caption_length
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)
        self.mesh = mesh if mesh is not None else data_mesh()
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        check_batch(global_batch, self.mesh, name)
        check_host_memory(global_batch, transform.size, name, prefetch, self.process_count)
        self.global_batch = global_batch
        self.local_batch = global_batch // self.process_count
        self.sharding = split_rows(self.mesh)
        self.prefetch = prefetch
        self._pool = concurrent.futures.ThreadPoolExecutor(num_threads or LOADER_THREADS)
        self._lock = threading.Lock()
        self.unreadable: dict[int, str] = {}
        self._said_cut = False  # captions cut at caption_length (_say_cut_captions)

    # ------------------------------------------------------------------ host

    @property
    def steps_per_epoch(self) -> int:
        """Training steps per epoch (the remainder of each permutation is dropped)."""
        return len(self.indices) // self.global_batch

    def step_indices(self, step: int) -> tuple[np.ndarray, int]:
        """Global source indices of training step `step`, and its epoch."""
        spe = self.steps_per_epoch
        if spe == 0:
            raise InvalidInput(f"{len(self.indices)} examples are fewer than one global batch of {self.global_batch}")
        epoch, pos = divmod(step, spe)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))
        return self.indices[perm[pos * self.global_batch : (pos + 1) * self.global_batch]], epoch

    def _example(self, index: int, epoch: int) -> tuple[np.ndarray, int, bool, str]:
        label, caption = -1, ""  # an example that cannot be read (a damaged TFDS record) is masked out: no label
        try:
            if self.caption_length:
                raw, label, caption = self.source.read_captioned(int(index))
            else:
                raw, label = self.source.read(int(index))
            image = load(raw, self.transform, np.random.default_rng([self.seed, epoch, int(index)]))
        except Undecodable as err:
            with self._lock:
                self.unreadable[int(index)] = printable(err)
            size = self.transform.size
            return np.zeros((size, size, 3), np.float32), label, False, caption
        return np.asarray(image, np.float32), label, True, caption

    def host_batch(self, global_indices: np.ndarray, epoch: int = 0) -> dict[str, np.ndarray]:
        """This process's slice of a global batch (-1 = padding), as NumPy arrays."""
        mine = global_indices[self.process_index * self.local_batch : (self.process_index + 1) * self.local_batch]
        real = [int(i) for i in mine if i >= 0]
        loaded = dict(zip(real, self._pool.map(lambda i: self._example(i, epoch), real)))
        size = self.transform.size
        image = np.zeros((len(mine), size, size, 3), np.float32)
        label = np.full((len(mine),), -1, np.int32)
        mask = np.zeros((len(mine),), bool)
        texts = [""] * len(mine)
        for row, i in enumerate(mine):
            if i >= 0:
                image[row], label[row], mask[row], texts[row] = loaded[int(i)]
        batch = {"image": image, "label": label, "mask": mask, "index": np.asarray(mine, np.int32)}
        if self.caption_length:
            batch["text"] = tokenize(texts, self.caption_length)
            if not self._said_cut:
                self._say_cut_captions(texts, batch["text"])
        return batch

    def _say_cut_captions(self, texts: list[str], ids: np.ndarray) -> None:
        """Say, once, that captions longer than `caption_length` are cut to it (EOT kept): the object's name at a
        caption's end was trained away, unsaid (`--config.caption_length=5` on the toy world's captions)."""
        tokenizer = get_tokenizer()
        full = [row for row in np.flatnonzero(ids[:, -1] == tokenizer.eot_id) if texts[row]]  # ends at EOT: cut?
        if cut := [(texts[r], n) for r in full if (n := len(tokenizer.encode(texts[r]))) > self.caption_length - 2]:
            self._said_cut = True
            text, n = cut[0]
            distributed.log(
                f"captions longer than caption_length {self.caption_length} (SOT, {self.caption_length - 2} tokens, "
                f"EOT) are cut to it, as {text!r} ({n} tokens): raise caption_length to train on whole captions"
            )

    def to_global(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.sharding, v) for k, v in batch.items()}

    # ------------------------------------------------------------- iterators

    def _prefetched(self, make, count: int) -> Iterator[dict[str, jax.Array]]:
        """`count` global batches `make(i)`, produced `prefetch` ahead on a thread."""
        q: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()

        def produce():
            try:
                for i in range(count):
                    if stop.is_set():
                        return
                    q.put(("ok", self.to_global(make(i))))
                q.put(("done", None))
            except BaseException as err:  # surfaced in the consumer
                q.put(("error", err))

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while True:
                kind, item = q.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()
            # Unblock a producer waiting on a full queue, and wait for it to end; not while Python exits (a stopped
            # run's batches are closed by the exit's garbage collection): Python 3.13 ends a daemon thread that wakes
            # then without marking it ended, and this waited forever (both hosts of a stopped job hung).
            while thread.is_alive() and not sys.is_finalizing():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    def train(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[dict[str, jax.Array]]:
        """Training batches for steps `start_step, start_step + 1, ...` (forever unless `num_steps`)."""
        count = num_steps if num_steps is not None else 2**62

        def make(i):
            idx, epoch = self.step_indices(start_step + i)
            return self.host_batch(idx, epoch)

        return self._prefetched(make, count)

    @property
    def eval_steps(self) -> int:
        return -(-len(self.indices) // self.global_batch)

    def evaluate(self) -> Iterator[dict[str, jax.Array]]:
        """Every example of `indices` once, in order; the last batch padded (mask False)."""
        padded = np.full(self.eval_steps * self.global_batch, -1, np.int64)
        padded[: len(self.indices)] = self.indices

        def make(i):
            return self.host_batch(padded[i * self.global_batch : (i + 1) * self.global_batch])

        return self._prefetched(make, self.eval_steps)

    def report(self) -> str:
        """One line on this host's undecodable images, naming the host in a multi-host job (empty when none)."""
        if not self.unreadable:
            return ""
        host = on_host(self.process_index, self.process_count)
        return f"{len(self.unreadable)} undecodable image(s) skipped (masked out){host}: {listed(self.unreadable)}"

    def unreadable_total(self) -> int:
        """How many distinct examples no host could decode so far. With several hosts every host must call it (a
        collective): over several epochs each host meets its own share of an image, so the hosts' counts overlap."""
        if self.process_count == 1:
            return len(self.unreadable)
        every_host = distributed.every_host(self._unreadable_bits())  # (hosts, bytes)
        return int(np.unpackbits(np.bitwise_or.reduce(every_host)).sum())

    def _unreadable_bits(self) -> np.ndarray:
        """This host's undecodable examples as a packed bitmap over the source: 157 KiB for ImageNet's 1.28 M."""
        bits = np.zeros(len(self.source), bool)
        bits[list(self.unreadable)] = True
        return np.packbits(bits)

    def log_unreadable(self, label: str) -> None:
        """Prints `report()` as `[label] ...` when this host skipped any image: per host, as each decodes its rows."""
        if self.unreadable:
            print(f"[{label}] {self.report()}", flush=True)
