"""OOD methods.

Each module `jaxood.methods.<name>` has `trainable_rules(config)` and
`build(config, model, clip_params, class_names, mesh) -> Method`.

`trainable_rules(config)`: ordered `(regex, group)` rules over '/'-joined
parameter paths; the first match decides, group `"frozen"` freezes, every other
group name selects an optimiser group in `config.optim.groups`. Every leaf of
`Method.params` must match. The trainer reads them before any work (to refuse
an override of a group the method lacks) and splits the parameters with them.

The trainer imports the module named by `config.method` and needs nothing else; the `Method` that `build`
returns has:

- `params`: the full initial parameter tree (frozen and trainable leaves), the
  CLIP under `"clip"` (evaluation's zero-shot rows use it as training left it).
  The trainer places it (and `state`) on the devices, then drops these host
  copies, so `loss` and `scorer` must take parameters as arguments, not keep them.
- `loss(params, state, batch, rng) -> (loss, (metrics, state))`: `state` holds
  mutable collections (e.g. BatchNorm statistics; `{}` when none); `batch` has
  `image`, `label`, `mask`. Input gradients (`jax.grad` w.r.t. images) may be
  taken inside.
- `scorer(params) -> jaxood.evaluate.Scorer`: predictions and OOD scores, as a
  traceable `fn(args, images)` with the arrays it reads in `args` (not closed
  over), so evaluation can trace it together with the zero-shot rows and run
  the image tower they share once.
- `memory_fixes` (optional): the method's own settings that shrink its step,
  which the trainer names first when a step is too large for a device.
- `metric_limits` (optional): `{metric: (most, message)}` for metrics of `loss`
  that say the step is not computing what the method means (an unconverged
  solver); the trainer logs a warning with the message the first time a logged
  value exceeds its most.

The module also names `SCORE_ROWS`, the rows its `scorer` gives, in table order: the trainer reads them before
it opens the data, as a run with no score row (none of the method's, none in `config.scores`) reads no OOD set.

A module may also have `check_settings(config, arch)`, which refuses its own settings' bad values for a CLIP of
architecture `arch` (`jaxood.models.clip.CLIPConfig`): the trainer calls it before any work where the
architecture is known without loading the weights (not for a hub id), and `build` should call it too.

A module may also name `RESUME_MAY_CHANGE`: its config keys a resumed run may
change (ones only `scorer` reads, or that change memory use but not results);
the trainer refuses any other change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxood.errors import InvalidInput
from jaxood.run_folders import PRETRAINING

# The methods jaxood is to implement and does not yet (README's Status), by their config.method name: a config naming
# one is told so, where the list of the methods it has said nothing of them.
PLANNED = {"dot_ood": "DOT-OOD", "cma": "CMA", "ascood": "ASCOOD"}
# What each command does with the configs it takes (`command_for`), said where another command refuses one.
COMMANDS = {
    "jaxood.train": "trains a method's config (config.method, as in configs/sot_glp.py) and evaluates it, resuming a "
    "run's --workdir at its last checkpoint",
    "jaxood.pretrain": f"pretrains a CLIP (config.method {PRETRAINING!r}, as in configs/toy_clip.py), evaluates it and "
    "exports it (WORKDIR/export, the CLIP a method's --config.model names), resuming a run's --workdir at its last "
    "checkpoint",
    "jaxood.evaluate": "scores a CLIP as it is (the zero-shot rows, as in configs/zeroshot.py)",
}


def command_for(method: str | None) -> str:
    """The command that takes a config of `config.method` `method`: jaxood.evaluate one naming none (zero-shot),
    jaxood.pretrain the CLIP pretraining's, jaxood.train every other method's."""
    if not method:
        return "jaxood.evaluate"
    return "jaxood.pretrain" if method == PRETRAINING else "jaxood.train"


def check_command(command: str, config) -> None:
    """Refuse, before any work, a config that `command` does not take (`command_for`), naming the command that does;
    a planned method's config is told that the method is planned."""
    method = config.get("method")
    if (takes_it := command_for(method)) == command:
        return
    this = f"this config's method is {method!r}" if method else "this config names no method (config.method)"
    fix = planned_method_note(method) if method else None
    raise InvalidInput(
        f"{command} {COMMANDS[command]}, but {this}: "
        + (fix or f"run python -m {takes_it} with the same flags, which {COMMANDS[takes_it]}")
    )


def planned_method_note(name: str) -> str | None:
    """Where `name` means a planned method, however written ("DOT-OOD", "dotood"), the words that say so; else None."""
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    title = next((title for method, title in PLANNED.items() if method.replace("_", "") == key), None)
    return f"{title} is planned and not yet in jaxood, as README's Status says" if title else None


@dataclasses.dataclass
class Method:
    params: dict
    loss: Callable
    scorer: Callable
    state: dict = dataclasses.field(default_factory=dict)
    memory_fixes: str = ""  # the method's settings that shrink its step, named when a step cannot fit
    metric_limits: dict[str, tuple[float, str]] = dataclasses.field(default_factory=dict)  # {metric: (most, why)}


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values (B,)` over a batch's real examples (`mask`; the loader's padding rows count for nothing)."""
    w = mask.astype(values.dtype)
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def masked_accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """The fraction of a batch's real examples (`mask`) whose top logit is their label."""
    return masked_mean((jnp.argmax(logits, -1) == labels).astype(logits.dtype), mask)
