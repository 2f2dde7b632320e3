"""Hugging Face CLIP weights -> jaxood Flax params, by a strict rename/transpose table.

Every tensor of the checkpoint must map to a parameter of the model and every
parameter must be filled, with matching shapes; anything missing, left over or
misshaped is an error that names it. The only tensors skipped are the
`position_ids` index buffers older checkpoints carry (they hold no weights).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import glob
import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping

import flax
import flax.serialization
import jax
import ml_dtypes
import numpy as np

from jaxood.cache import write_whole
from jaxood.errors import InputMissing, InvalidInput, UserError
from jaxood.models.clip import CLIP, CLIPConfig, param_shapes, read_json_mapping
from jaxood.run_folders import EXPORT, RUN_CHECKPOINTS, run_method

JAXOOD_CONFIG = "jaxood_clip.json"
JAXOOD_PARAMS = "params.msgpack"
OPENCLIP_CONFIG = "open_clip_config.json"  # an OpenCLIP checkpoint's, as open_clip fetches one from the hub
_SKIPPED = re.compile(r".*\.position_ids$")


class CheckpointMismatch(InvalidInput):
    """Raised when a checkpoint's tensors do not match the model's parameters."""


def _flax_key(hf_key: str) -> tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]:
    """Flax path and array transform for one Hugging Face state-dict key."""
    parts = re.sub(r"\.layers\.(\d+)\.", r".layers_\1.", hf_key).split(".")
    *module, leaf = parts
    owner = module[-1] if module else ""
    same = lambda a: a  # noqa: E731
    if leaf in ("class_embedding", "logit_scale"):
        return (*module, leaf), same
    if owner == "patch_embedding":  # Conv2d (D, C, p, p) -> (p, p, C, D)
        return tuple(module), lambda a: a.transpose(2, 3, 1, 0)
    if owner in ("token_embedding", "position_embedding"):
        return (*module, "embedding"), same
    if "norm" in owner or "layrnorm" in owner:
        return (*module, {"weight": "scale", "bias": "bias"}[leaf]), same
    if leaf == "weight":  # Linear (out, in) -> (in, out)
        return (*module, "kernel"), lambda a: a.T
    return (*module, leaf), same


def _flatten(tree: Mapping) -> dict[tuple[str, ...], object]:
    """Leaves by key path; None is an empty node (orbax's metadata of a leafless optimiser state), not a leaf."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    return {tuple(k): v for k, v in flat.items() if v is not None}


def check_tree(expected: Mapping, actual: Mapping, what: str = "checkpoint", fix: str = "") -> None:
    """Raise `CheckpointMismatch` naming the missing, unexpected or misshaped leaves (`LISTED` of each kind, and how
    many more) and `fix`, when given."""
    exp, act = _flatten(expected), _flatten(actual)
    shape = lambda v: tuple(v.shape) if hasattr(v, "shape") else tuple(np.shape(v))  # noqa: E731
    missing = ["/".join(k) for k in exp.keys() - act.keys()]
    unexpected = ["/".join(k) for k in act.keys() - exp.keys()]
    misshaped = [
        f"{'/'.join(k)}: {what} {shape(act[k])} vs model {shape(exp[k])}"
        for k in exp.keys() & act.keys()
        if shape(act[k]) != shape(exp[k])
    ]
    if missing or unexpected or misshaped:
        kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
        lines = _mismatch_lines(f"the {what} does not match the model:", kinds)
        raise CheckpointMismatch("\n".join(lines + ([f"({fix})"] if fix else [])))


LISTED = 20  # names a mismatch error shows of each kind; it counts the others


def _mismatch_lines(title: str, kinds) -> list[str]:
    """`title`, then for each `(kind, names)` with names: their count and the first `LISTED` of them, sorted. A
    checkpoint of another architecture (a ViT-L/14's for a ViT-B/16 config) misses or misshapes hundreds."""
    lines = [title]
    for kind, names in kinds:
        names = sorted(names)
        if names:
            more = f", ... and {len(names) - LISTED} more" if len(names) > LISTED else ""
            lines.append(f"  {kind} ({len(names)}): " + ", ".join(names[:LISTED]) + more)
    return lines


def convert_state_dict(state: Mapping[str, np.ndarray], cfg: CLIPConfig) -> dict:
    """Flax params for `CLIP(cfg)` from a Hugging Face `CLIPModel` state dict (NumPy arrays)."""
    expected = _flatten(param_shapes(CLIP(cfg)))
    flat, unexpected, misshaped, misshaped_paths = {}, [], [], set()
    for hf_key, array in state.items():
        if _SKIPPED.match(hf_key):
            continue
        path, transform = _flax_key(hf_key)
        if path not in expected:
            unexpected.append(hf_key)
            continue
        value = np.asarray(transform(np.asarray(array)), np.float32)
        if value.shape != tuple(expected[path].shape):
            misshaped.append(f"{hf_key}: checkpoint {tuple(np.shape(array))} vs model {tuple(expected[path].shape)}")
            misshaped_paths.add(path)
            continue
        flat[path] = value
    missing = ["/".join(p) for p in expected if p not in flat and p not in misshaped_paths]
    if unexpected or missing or misshaped:
        title = "the Hugging Face checkpoint does not match the CLIP architecture of its config.json:"
        kinds = (("missing parameters", missing), ("unexpected tensors", unexpected), ("wrong shape", misshaped))
        raise CheckpointMismatch("\n".join(_mismatch_lines(title, kinds)))
    return flax.traverse_util.unflatten_dict(flat)


# ---------------------------------------------------------------- reading files


@contextlib.contextmanager
def _reading(path: str):
    """A weights file its parser cannot read (cut short by an interrupted download or copy) as one error naming it
    and the fix, instead of the parser's traceback (safetensors, msgpack, zip)."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        detail = (str(err).strip().splitlines() or [""])[0][:300]
        raise InvalidInput(
            f"{path} cannot be read ({type(err).__name__}: {detail}); it may be cut short by an interrupted "
            "download or copy: fetch or copy it again"
        ) from err


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    with _reading(path):
        return dict(load_file(path))


_TORCH_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "BoolStorage": np.bool_,
}


def read_torch_bin(path: str) -> dict[str, np.ndarray]:
    """Read a `torch.save` zip checkpoint into NumPy arrays without importing torch."""
    with open(path, "rb") as f:
        zip_header = f.read(4) == b"PK\x03\x04"
    if not zip_header:
        raise InvalidInput(
            f"{path} is a legacy (pre-1.6) torch checkpoint; re-save it with a recent torch or as safetensors"
        )
    with _reading(path), zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        prefix = names[0].split("/")[0]
        storages: dict[str, np.ndarray] = {}

        def storage(key: str, dtype) -> np.ndarray:
            if key not in storages:
                storages[key] = np.frombuffer(zf.read(f"{prefix}/data/{key}"), dtype=dtype)
            return storages[key]

        def rebuild(store, offset, size, stride, *unused):
            itemsize = store.dtype.itemsize
            return np.lib.stride_tricks.as_strided(
                store[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
            ).copy()

        class _Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "torch._utils" and name == "_rebuild_tensor_v2":
                    return rebuild
                if module == "torch" and name in _TORCH_DTYPES:
                    return _TORCH_DTYPES[name]
                if module == "collections" and name == "OrderedDict":
                    return OrderedDict
                raise InvalidInput(f"{path}: unsupported object {module}.{name} in a torch checkpoint")

            def persistent_load(self, pid):
                _, dtype, key, _location, _numel = pid
                return storage(key, dtype)

        with zf.open(f"{prefix}/data.pkl") as f:
            return dict(_Unpickler(f).load())


# Hugging Face's weight formats, in order of preference: the whole file, the names of its shards, and the reader of
# either (the PyTorch pickle read without torch). Shards come with an index named after the whole file
# (`model.safetensors.index.json`) that maps each tensor to its shard.
WEIGHT_FORMATS = (
    ("model.safetensors", "model-*-of-*.safetensors", read_safetensors),
    ("pytorch_model.bin", "pytorch_model-*-of-*.bin", read_torch_bin),
)
INDEX = ".index.json"
# What `read_hf_dir` reads in a folder, in order of preference: each format whole, then its index.
HF_WEIGHTS = tuple(name for whole, _, _ in WEIGHT_FORMATS for name in (whole, whole + INDEX))


def hf_weights(directory: str) -> str | None:
    """The weights file of a Hugging Face directory that `read_hf_dir` reads (`HF_WEIGHTS`), or None."""
    return next((name for name in HF_WEIGHTS if os.path.exists(os.path.join(directory, name))), None)


def _folders_below(directory: str, holds: Callable[[str], bool], most: int = 3) -> list[str]:
    """Up to `most` folders one or two levels below `directory` that `holds` a CLIP: where a folder given one level
    too high keeps it (the hub's cache, models--<owner>--<name>, keeps a download in snapshots/<revision>/; a
    jaxood.train workdir keeps its exported CLIP in export/)."""
    folders = (glob.glob(os.path.join(glob.escape(directory), *depth, "")) for depth in (["*"], ["*", "*"]))
    found = [os.path.normpath(f) for level in folders for f in sorted(level) if holds(f)]
    return found[:most]


def _holds_clip(folder: str) -> bool:
    """A jaxood CLIP checkpoint, or a Hugging Face directory with its config and weights."""
    if os.path.isfile(os.path.join(folder, JAXOOD_CONFIG)):
        return True
    return os.path.isfile(os.path.join(folder, "config.json")) and hf_weights(folder) is not None


def _holds_openclip(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, OPENCLIP_CONFIG))


def _openclip_said(directory: str) -> str:
    """What to do with the OpenCLIP checkpoint in `directory` or below it, if any (open_clip's own download of a
    LAION model keeps only OpenCLIP's files in the hub's cache): jaxood reads the same model's Hugging Face files,
    which LAION's hub repos keep beside OpenCLIP's, fetched by its hub id (in the cache's folder name)."""
    found = [directory] if _holds_openclip(directory) else _folders_below(directory, _holds_openclip, most=1)
    if not found:
        return ""
    cached = re.search(r"(?:^|/)models--([^/]+?)--([^/]+)(?:/|$)", os.path.abspath(found[0]).replace(os.sep, "/"))
    repo = f"{cached[1]}/{cached[2]}" if cached else "its hub id (owner/name)"
    return (
        f"; {found[0]} holds an OpenCLIP checkpoint ({OPENCLIP_CONFIG}), which jaxood does not read: pass the same "
        f"model's Hugging Face files (config.json and its weights), which LAION's hub repos keep beside OpenCLIP's "
        f"and jaxood fetches given {repo} where there is network"
    )


def read_hf_dir(directory: str) -> tuple[CLIPConfig, dict[str, np.ndarray]]:
    """Config and state dict of a local Hugging Face CLIP directory."""
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        what = (
            f"{directory} has no config.json: it is neither a Hugging Face CLIP directory (config.json and its "
            f"weights) nor a jaxood CLIP checkpoint ({JAXOOD_CONFIG} and {JAXOOD_PARAMS})"
        )
        if below := _folders_below(directory, _holds_clip):
            what += f"; pass the CLIP folder below it: {' or '.join(below)}"
        else:
            what += _openclip_said(directory)
        raise InputMissing(what)
    cfg = CLIPConfig.from_json(config_path)
    weights = hf_weights(directory)
    if weights is None:
        raise InputMissing(
            f"{directory} has config.json but no weights: expected model.safetensors or pytorch_model.bin, or "
            "model.safetensors.index.json or pytorch_model.bin.index.json with the shards it names"
        )
    read = {whole: reader for whole, _, reader in WEIGHT_FORMATS}
    path = os.path.join(directory, weights)
    if weights.endswith(INDEX):
        index = read_json_mapping(path)
        if not isinstance(index.get("weight_map"), dict):
            raise InvalidInput(f"{path} has no weight_map naming the weights' shards")
        shards, read_shard = sorted(set(index["weight_map"].values())), read[weights.removesuffix(INDEX)]
        state = {k: v for shard in shards for k, v in read_shard(os.path.join(directory, shard)).items()}
    else:
        state = read[weights](path)
    # A bare CLIPModel state dict; tolerate the "clip." / "model." prefixes of wrappers.
    if state and all(k.startswith(("clip.", "model.")) for k in state):
        state = {k.split(".", 1)[1]: v for k, v in state.items()}
    return cfg, state


# What `download` fetches besides config.json, format by format (`WEIGHT_FORMATS`): the whole file, or its shards and
# index. Not every repo has safetensors on its main branch. Hugging Face's names only: LAION's repos keep OpenCLIP's
# copy of the weights beside them (open_clip_model.safetensors), which `*.safetensors` fetched too.
HUB_WEIGHTS = tuple((whole, shards, whole + INDEX) for whole, shards, _ in WEIGHT_FORMATS)


def download(repo_id: str) -> str:
    """Fetch a hub checkpoint (config and one copy of the weights) and return its local directory."""
    try:
        from huggingface_hub import snapshot_download

        for patterns in HUB_WEIGHTS:
            directory = snapshot_download(repo_id, allow_patterns=["config.json", *patterns])
            if hf_weights(directory):
                break
        return directory  # with no weights, read_hf_dir names what it looked for
    except Exception as err:  # offline, unknown id, gated repo ...
        raise _not_fetched(repo_id, err) from err


def hub_config(repo_id: str) -> CLIPConfig:
    """A hub CLIP's architecture from its config.json alone (kilobytes; the hub's cache keeps it for `download`)."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, "config.json")
    except Exception as err:
        raise _not_fetched(repo_id, err) from err
    return CLIPConfig.from_json(path)


def _not_fetched(repo_id: str, err: Exception) -> InputMissing:
    return InputMissing(
        f"{_local_folder_said(repo_id)}could not fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}: "
        f"{err}).\n"
        f"Without network: on a machine with access run `hf download {repo_id} config.json pytorch_model.bin "
        "--local-dir DIR` (or `huggingface-cli download ...`), copy DIR here and pass DIR instead of the hub id. "
        "A repo without pytorch_model.bin has model.safetensors, or shards of either (model.safetensors.index.json "
        "or pytorch_model.bin.index.json, and the files it names): name those. Only these files: the "
        "whole repo can hold the weights four times over (TensorFlow, Flax and OpenCLIP copies)."
    )


def is_hub_id(name: str) -> bool:
    """`owner/name` that is no local path: what `load_params` fetches from the hub."""
    return not (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1)


def _local_folder_said(repo_id: str) -> str:
    """Where the hub id `repo_id` (owner/name) begins with a folder that is here, that it was read as a hub id, with
    the names in that folder close to its second part: a local CLIP folder mistyped (`runs/export` for
    `runs/pretrain/export`, `runs/exprot`) was sent to the hub, its error naming the hub alone."""
    owner, name = repo_id.split("/")
    if not os.path.isdir(owner):
        return ""
    try:
        close = difflib.get_close_matches(name, os.listdir(owner), n=3)
    except OSError:
        close = []
    near = f"; close to it there: {', '.join(close)}" if close else ""
    return f"{repo_id!r} is no folder here ({owner} is one, without {name} in it{near}), so it was read as a hub id: "


# ------------------------------------------------------------ jaxood checkpoints


def save(directory: str, cfg: CLIPConfig, params: Mapping, half: bool = False) -> str:
    """Save params as a jaxood checkpoint, so later loads skip conversion.

    `half=True` stores float16 (half the size; loading restores float32), except an array with a value beyond
    float16's range (65504), which float16 would store as inf: it stays float32. Each file is written whole or not
    at all (`write_whole`): the embedded CLIP, written again by `jaxood.pretrain --install`, was left cut short by a
    stop or a full disk mid-write, and every command loading it failed.
    """
    with write_whole(os.path.join(directory, JAXOOD_CONFIG)) as f:
        json.dump(cfg.to_dict(), f, indent=1)

    def stored(array) -> np.ndarray:
        array = np.asarray(array, np.float32)
        fits = half and not (np.abs(array) > np.finfo(np.float16).max).any()
        return array.astype(np.float16) if fits else array

    host = jax.tree.map(stored, flax.core.unfreeze(params))
    with write_whole(os.path.join(directory, JAXOOD_PARAMS), "wb") as f:
        f.write(flax.serialization.msgpack_serialize(host))
    return directory


def load_jaxood(directory: str) -> tuple[CLIPConfig, dict]:
    cfg = local_config(directory)
    path = os.path.join(directory, JAXOOD_PARAMS)
    with open(path, "rb") as f, _reading(path):
        params = flax.serialization.msgpack_restore(f.read())
    check_tree(param_shapes(CLIP(cfg)), params, what=f"jaxood checkpoint {directory}")
    return cfg, jax.tree.map(lambda a: np.asarray(a, np.float32), params)


def local_config(directory: str | os.PathLike) -> CLIPConfig | None:
    """The architecture of the CLIP in a local jaxood or Hugging Face directory, without its weights; None for
    anything else (a hub id)."""
    directory = os.fspath(directory)
    if os.path.isfile(os.path.join(directory, JAXOOD_CONFIG)):
        return CLIPConfig.from_dict(read_json_mapping(os.path.join(directory, JAXOOD_CONFIG)))
    if os.path.isfile(os.path.join(directory, "config.json")):
        return CLIPConfig.from_json(os.path.join(directory, "config.json"))
    return None


def _refuse_training_state(directory: str) -> None:
    """A `jaxood.train` workdir or one of its step checkpoints, passed where a CLIP goes, named as such: it was
    read as a Hugging Face directory (the workdir's run config as a CLIP config) and refused for missing files."""
    holds = lambda name: os.path.exists(os.path.join(directory, name))  # noqa: E731
    if holds("_CHECKPOINT_METADATA"):  # orbax's marker of a saved step
        what, workdir = (
            "a step checkpoint of a jaxood.train run",
            os.path.dirname(os.path.dirname(os.path.normpath(directory))),
        )
    elif holds(RUN_CHECKPOINTS) and run_method(directory):
        what, workdir = "a jaxood.train workdir", directory
    else:
        return
    export = os.path.join(workdir, EXPORT)
    if os.path.exists(os.path.join(export, JAXOOD_CONFIG)):
        instead = f"the CLIP this run exported, {export}"
    else:
        instead = "a CLIP that jaxood.pretrain exported (WORKDIR/export)"
    raise InvalidInput(
        f"{directory} is {what}: it holds the run's training state, not a CLIP to load. Pass {instead}, a Hugging "
        "Face CLIP directory or a jaxood CLIP checkpoint"
    )


def load_params(name_or_dir: str | os.PathLike) -> tuple[CLIPConfig, dict]:
    """`(config, params)` from a jaxood checkpoint, a local HF directory, or a hub id."""
    name = os.fspath(name_or_dir)
    if os.path.isdir(name):
        if not os.access(name, os.R_OK | os.X_OK):  # a folder this user may not list: "has no config.json" before
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        if os.path.exists(os.path.join(name, JAXOOD_CONFIG)):
            return load_jaxood(name)
        _refuse_training_state(name)
        cfg, state = read_hf_dir(name)
        return cfg, convert_state_dict(state, cfg)
    choices = (
        "pass a local Hugging Face CLIP directory (config.json + model.safetensors), a jaxood checkpoint directory, "
        "or toy (the tiny CLIP that ships with jaxood)"
    )
    if os.path.isfile(name):
        raise InputMissing(f"{name!r} is a file, not a CLIP's folder: {_file_fix(name) or choices}")
    if not is_hub_id(name):
        raise InputMissing(f"{name!r} is neither a directory nor a Hugging Face hub id (owner/name): {choices}")
    cfg, state = read_hf_dir(download(name))
    return cfg, convert_state_dict(state, cfg)


# OpenAI's clip package's checkpoints of its ViTs (~/.cache/clip/<name>.pt, TorchScript archives, which jaxood does
# not read), and the hub's copies of the same CLIPs in Hugging Face's format. Its ResNets have none.
OPENAI_ON_HUB = {
    "ViT-B-32.pt": "openai/clip-vit-base-patch32",
    "ViT-B-16.pt": "openai/clip-vit-base-patch16",
    "ViT-L-14.pt": "openai/clip-vit-large-patch14",
    "ViT-L-14-336px.pt": "openai/clip-vit-large-patch14-336",
}


def _file_fix(path: str) -> str:
    """What to pass for the file `path`, given where a CLIP's folder goes (a weights file, a config, OpenAI's own
    checkpoint of a CLIP), where it is known: the folder holding it, where that holds a CLIP; the hub's copy of an
    OpenAI checkpoint. Empty otherwise."""
    folder = os.path.dirname(os.path.abspath(path))
    if _holds_clip(folder):
        return f"pass the folder holding it, {folder}"
    if hub := OPENAI_ON_HUB.get(os.path.basename(path)):
        return (
            f"OpenAI's clip package's checkpoints are not read; pass {hub}, the same CLIP in Hugging Face's format "
            f"(its hub id, or the folder `hf download {hub} config.json pytorch_model.bin --local-dir DIR` makes)"
        )
    return ""
