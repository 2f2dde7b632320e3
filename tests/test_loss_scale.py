"""Dynamic loss scaling (`config.loss_scale = "dynamic"`, jaxood.loss_scale) in the trainer's step, on losses whose
float16 backward passes are derived by hand; the checkpoints it saves and restores."""

import types

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import load_config, torch_optimizer

from jaxood import loss_scale
from jaxood import train as trainer
from jaxood.checkpoints import Checkpoints
from jaxood.models.convert import CheckpointMismatch

F16 = jnp.float16


def _stepper(loss_fn, scaling: str, tx, w):
    """The trainer's jitted step on one float32 parameter `w` (a number or a list), whose loss is `loss_fn(w)`, and
    the state before its first step."""
    method = types.SimpleNamespace(loss=lambda params, mutable, batch, rng: (loss_fn(params["w"]), ({}, mutable)))
    state = trainer.initial_state({"w": jnp.asarray(w, jnp.float32)}, tx, {}, scaling)
    return state, jax.jit(trainer.make_step(method, tx, seed=0))


def _run(loss_fn, scaling: str, steps: int, tx=None, w=1.0):
    """`steps` steps of the trainer's step (`_stepper`); the state after them and each step's metrics."""
    state, step = _stepper(loss_fn, scaling, tx or optax.sgd(1.0), w)
    metrics = []
    for _ in range(steps):
        state, m = step(state, {}, {})
        metrics.append(jax.device_get(m))
    return state, metrics


def test_a_float16_gradient_below_its_smallest_number_survives_the_scale():
    """d/dw of 1e-4 * sum(float16(w) * 1e-4) is 1e-8, below float16's smallest number (6e-8): the float16 backward
    pass rounds it to 0, so the step leaves w as it was. Scaled by 2**16 it is 6.55e-4 in float16, and 1e-8 again
    once unscaled in float32: SGD at rate 1 moves w by it."""

    def loss(w):
        return jnp.sum((w.astype(F16) * F16(1e-4)).astype(jnp.float32)) * 1e-4

    w = 1e-6  # where float32 holds w - 1e-8
    state, metrics = _run(loss, "none", 1, w=w)
    assert float(state.trainable["w"]) == np.float32(w) and metrics[0]["grad_norm"] == 0.0
    assert "loss_scale" not in metrics[0] and state.scaler is None
    state, metrics = _run(loss, "dynamic", 1, w=w)
    np.testing.assert_allclose(metrics[0]["grad_norm"], 1e-8, rtol=1e-3)
    np.testing.assert_allclose(np.float32(w) - float(state.trainable["w"]), 1e-8, rtol=1e-3)
    assert metrics[0]["loss_scale"] == 2.0**16 and metrics[0]["skipped"] == 0.0


def test_a_step_the_scale_overflows_is_skipped_and_the_scale_halved_while_the_schedule_goes_on():
    """d/dw of 0.5 * sum(float16(w) * 4) is 2. Scaled by 2**16 the backward pass holds 2**15 * 4 = 2**17 in float16,
    past its 65504: inf. So is 2**14 * 4 at 2**15. At 2**14 it holds 2**15, which fits: the third step is taken.
    The skipped steps leave w and the momentum as they were, and count for the schedule (a rate of 0.1 * (count +
    1)), as PyTorch's scheduler steps at a step GradScaler skips: w moves by 0.3 * 2 at the third step, not 0.1 * 2.
    Nothing stops the run."""

    def loss(w):
        return jnp.sum((w.astype(F16) * F16(4.0)).astype(jnp.float32)) * 0.5

    tx = optax.sgd(lambda count: 0.1 * (count + 1), momentum=0.9)
    state, metrics = _run(loss, "dynamic", 3, tx=tx)
    assert [m["skipped"] for m in metrics] == [1.0, 1.0, 0.0]
    assert [m["loss_scale"] for m in metrics] == [2.0**16, 2.0**15, 2.0**14]
    assert np.isinf(metrics[0]["grad_norm"]) and metrics[2]["grad_norm"] == 2.0
    np.testing.assert_allclose(float(state.trainable["w"]), 1.0 - 0.3 * 2.0, rtol=1e-6)
    trace, count = state.opt_state[0].trace["w"], state.opt_state[1].count
    assert float(trace) == 2.0 and int(count) == 3  # the momentum of the one step taken; every step counted
    assert bool(state.finite) and int(state.bad_step) == -1 and int(state.step) == 3
    assert float(state.scaler["scale"]) == 2.0**14 and int(state.scaler["good"]) == 1


def test_adamw_does_not_count_a_skipped_step_for_its_bias_correction_but_its_schedule_does():
    """The loss above, under AdamW in the trainer's multi_transform: two skipped steps, the third taken. As PyTorch's
    Adam at a step GradScaler skips, AdamW's count stays, so the taken step is its first: bias-corrected, its
    update is the rate times g / |g|, 0.3 (the schedule's count is 2). Counted, it would be 0.3 * (0.1 * 2 /
    (1 - 0.9**3)) / sqrt(0.001 * 4 / (1 - 0.999**3)) = 0.19."""

    def loss(w):
        return jnp.sum((w.astype(F16) * F16(4.0)).astype(jnp.float32)) * 0.5

    adamw = optax.adamw(lambda count: 0.1 * (count + 1), weight_decay=0.0)
    tx = optax.chain(optax.clip_by_global_norm(1e3), optax.multi_transform({"g": adamw}, {"w": "g"}))
    state, metrics = _run(loss, "dynamic", 3, tx=tx)
    assert [m["skipped"] for m in metrics] == [1.0, 1.0, 0.0]
    np.testing.assert_allclose(float(state.trainable["w"]), 1.0 - 0.3, rtol=1e-5)
    counted = (optax.ScaleByAdamState, optax.ScaleByScheduleState)
    adam, schedule = jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, counted))[-2:]
    assert isinstance(adam, optax.ScaleByAdamState) and isinstance(schedule, optax.ScaleByScheduleState)
    assert (int(adam.count), int(schedule.count)) == (1, 3)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_the_steps_follow_pytorchs_gradscaler_through_skips(name):
    """The external reference: PyTorch's AdamW, or SGD with momentum (the SOT-GLP configs'), under `GradScaler` (as
    the released code's float16 training) and a per-step `LambdaLR`, on the loss above plus 0.5 * |w|^2 in float32,
    so the gradient changes each step; jaxood's optimiser group of the same settings. The first two steps overflow
    and are skipped, as the trainer's, and every parameter matches after each of 6 steps: Adam's bias correction
    counts the taken steps only, the learning rate every step."""
    import warnings

    import torch

    def loss(w):
        return jnp.sum((w.astype(F16) * F16(4.0)).astype(jnp.float32)) * 0.5 + 0.5 * jnp.sum(w**2)

    start = [1.0, -0.5, 2.0]
    w = torch.nn.Parameter(torch.tensor(start))
    optim = load_config("sot_glp", "paper", **{"optim.name": name}).optim  # momentum 0.9, decay 0.01, (0.9, 0.999)
    torch_opt = torch_optimizer([w], optim)
    schedule = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda count: 0.1 * (count + 1))
    scaler = torch.amp.GradScaler("cpu")
    tx = trainer._group_tx(optim, lambda count: 0.1 * (count + 1))
    state, step = _stepper(loss, "dynamic", tx, start)
    for k in range(6):
        torch_opt.zero_grad()
        torch_scale = scaler.get_scale()
        scaler.scale((w.half() * 4).float().sum() * 0.5 + 0.5 * (w**2).sum()).backward()
        scaler.step(torch_opt)
        scaler.update()
        with warnings.catch_warnings():  # a skipped first step: "lr_scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            schedule.step()
        state, metrics = step(state, {}, {})
        assert (metrics["loss_scale"], metrics["skipped"]) == (torch_scale, float(k < 2)), k
        # PyTorch's bias corrections are in float64, optax's in float32: about 1e-5 apart. The skips' count: 0.1.
        np.testing.assert_allclose(state.trainable["w"], w.detach().numpy(), atol=5e-5, err_msg=k)


def test_the_scale_doubles_after_2000_finite_steps_in_a_row_and_goes_no_lower_than_1():
    scaler = {"scale": jnp.float32(8.0), "good": jnp.int32(loss_scale.GROWTH_INTERVAL - 2)}
    scaler, skip = loss_scale.update(scaler, jnp.asarray(True))
    assert (float(scaler["scale"]), int(scaler["good"]), bool(skip)) == (8.0, loss_scale.GROWTH_INTERVAL - 1, False)
    scaler, skip = loss_scale.update(scaler, jnp.asarray(True))
    assert (float(scaler["scale"]), int(scaler["good"]), bool(skip)) == (16.0, 0, False)
    scaler, skip = loss_scale.update({"scale": jnp.float32(2.0), "good": jnp.int32(5)}, jnp.asarray(False))
    assert (float(scaler["scale"]), int(scaler["good"]), bool(skip)) == (1.0, 0, True)
    scaler, skip = loss_scale.update(scaler, jnp.asarray(False))
    assert (float(scaler["scale"]), bool(skip)) == (1.0, False)  # at 1 the gradient is not the scale's overflow


def test_a_gradient_no_scale_makes_finite_stops_the_run_at_scale_1_and_a_nan_loss_at_once():
    """sqrt's gradient at 0 is inf at any scale: 16 skipped steps halve 2**16 to 1, and the 17th, at scale 1, is the
    NaN guard's bad step. A NaN loss (here with a NaN gradient, as a scale's overflow would give) is one at its first
    step, whatever the scale."""
    state, metrics = _run(lambda w: jnp.sqrt(w - 1.0), "dynamic", 17)
    assert [m["skipped"] for m in metrics] == [1.0] * 16 + [0.0]
    assert metrics[-1]["loss_scale"] == 1.0
    assert not bool(state.finite) and int(state.bad_step) == 17
    state, _ = _run(lambda w: jnp.sqrt(w - 2.0), "dynamic", 1)
    assert not bool(state.finite) and int(state.bad_step) == 1


@flax.struct.dataclass
class _Before:  # a train state as saved before a field existed
    step: jax.Array


@flax.struct.dataclass
class _Since:
    step: jax.Array
    scaler: dict | None


def test_a_field_left_none_is_not_saved_so_a_checkpoint_from_before_the_field_restores(tmp_path):
    """`TrainState.scaler` is None without loss scaling. Saved as such, orbax keeps the None, and a checkpoint
    from before the field existed could not be restored (orbax's tree mismatch, told as a damaged checkpoint)."""
    before, since = Checkpoints(str(tmp_path / "before"), 2), Checkpoints(str(tmp_path / "since"), 2)
    before.save(1, _Before(step=jnp.int32(7)))
    restored = before.restore(1, _Since(step=jnp.int32(0), scaler=None))
    chex.assert_trees_all_equal(restored, _Since(step=jnp.int32(7), scaler=None))
    since.save(1, _Since(step=jnp.int32(7), scaler=None))
    saved = since.manager.item_metadata(1)
    assert set(getattr(saved, "tree", saved)) == {"step"}  # orbax 0.12: TreeMetadata; 0.11.0: a dict
    # A run that scales its loss resuming one that did not: the scaler's leaves are named.
    with pytest.raises(CheckpointMismatch, match="scaler/good"):
        since.restore(1, _Since(step=jnp.int32(0), scaler=loss_scale.init("dynamic")))
    since.save(2, _Since(step=jnp.int32(8), scaler=loss_scale.init("dynamic")))
    restored = since.restore(2, _Since(step=jnp.int32(0), scaler={"scale": jnp.float32(1), "good": jnp.int32(0)}))
    chex.assert_trees_all_equal(restored, _Since(step=jnp.int32(8), scaler=loss_scale.init("dynamic")))
