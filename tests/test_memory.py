"""The memory a compiled step needs, and the trainer refusing a step that cannot fit before it runs."""

import jax
import jax.numpy as jnp
import pytest
from test_sot_glp import small_config

from jaxood import memory
from jaxood import train as trainer


def test_step_bytes_counts_arguments_outputs_and_temps_once():
    x = jnp.ones((512, 1024), jnp.float32)  # 2 MiB
    mib = 2**20

    def step(a):
        return jnp.sin(a) @ a.T  # a 2 MiB temp (sin) and a 1 MiB output

    plain = memory.step_bytes(jax.jit(step).lower(x).compile())
    assert 5 * mib <= plain < 6 * mib
    doubled = memory.step_bytes(jax.jit(lambda a: a * 2).lower(x).compile())
    donated = memory.step_bytes(jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile())
    assert doubled == 4 * mib and donated == 2 * mib  # the output written over the donated argument


def test_trainer_refuses_a_step_larger_than_a_device_before_it_runs(tiny_hf, tmp_path, monkeypatch, capsys):
    config = small_config(tiny_hf[0], tmp_path, num_steps=2, checkpoint_every=1)
    monkeypatch.setattr(memory, "device_bytes", lambda: 2**20)  # a 1 MiB device
    refused = (
        r"needs \d+\.\d GiB per device and a device has 0\.0 GiB: set --config\.sot_glp\.prompt_chunk to fewer "
        r"than the 48 prompts per device .*, --config\.remat=True"
    )  # the method's own fix first: the demo's 12 classes x (2 + 2) prompts on one device
    with pytest.raises(ValueError, match=refused):
        trainer.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # no step ran: the workdir it made is removed again
    assert "train step: " in capsys.readouterr().out


def test_evaluation_refuses_a_batch_larger_than_a_device_before_it_runs(tiny_hf, tmp_path, monkeypatch, capsys):
    """It ended in XLA's RESOURCE_EXHAUSTED, after a training run at its closing evaluation."""
    from conftest import load_config

    from jaxood import evaluate

    config = load_config("zeroshot", "toy", scores="mcm", model=tiny_hf[0], cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(memory, "device_bytes", lambda: 2**20)  # a 1 MiB device
    refused = (
        r"the evaluation batch needs \d+\.\d GiB per device and a device has 0\.0 GiB: set "
        r"--config\.eval_batch_size lower \(after a training run the same command evaluates its final checkpoint"
    )
    with pytest.raises(ValueError, match=refused):
        evaluate.evaluate(config, str(tmp_path / "run"))
    assert "evaluation batch: compiling" in capsys.readouterr().out and not (tmp_path / "run" / "results.json").exists()
