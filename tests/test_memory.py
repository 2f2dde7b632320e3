"""The memory a compiled step needs, and the trainer refusing a step that cannot fit before it runs."""

import os

import jax
import jax.numpy as jnp
import pytest
from test_sot_glp import small_config

from jaxood import memory
from jaxood import train as trainer


def test_step_bytes_counts_arguments_outputs_and_temps_once():
    # Compiled for the CPU wherever the suite runs: XLA:GPU adds its matmul library's workspace to the temps (36 MiB
    # more on an H200), which step_bytes counts too.
    x = jax.device_put(jnp.ones((512, 1024), jnp.float32), jax.devices("cpu")[0])  # 2 MiB
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
        r"--config\.eval_batch_size lower$"
    )  # no word of a saved training step: this command trains nothing
    with pytest.raises(ValueError, match=refused):
        evaluate.evaluate(config, str(tmp_path / "run"))
    assert "evaluation batch: compiling" in capsys.readouterr().out and not (tmp_path / "run" / "results.json").exists()


def test_an_id_accuracy_during_training_that_cannot_fit_keeps_the_step_it_evaluates(tiny_hf, tmp_path, monkeypatch):
    """`eval_every`'s evaluation, refused at step 3 as too large for a device, would have lost every step since the
    last checkpoint (none here, `checkpoint_every` 10): its step is saved before it, and the same command, with a
    smaller eval batch, goes on from there."""
    from jaxood import evaluate

    config = small_config(tiny_hf[0], tmp_path, num_steps=6, eval_every=3, checkpoint_every=10, eval_zero_shot=False)
    compile_within_memory = evaluate.compile_within_memory

    def on_a_1_mib_device(*args, **kwargs):  # the train step compiled for the real device first
        monkeypatch.setattr(memory, "device_bytes", lambda: 2**20)
        return compile_within_memory(*args, **kwargs)

    monkeypatch.setattr(evaluate, "compile_within_memory", on_a_1_mib_device)
    saved = r"--config\.eval_batch_size lower \(the run saved the step it evaluates: the same command goes on from it"
    with pytest.raises(ValueError, match=r"the evaluation batch needs .* " + saved):
        trainer.train(config, str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run" / "checkpoints") == ["3"]


def _fake_root(tmp_path, cgroup: str, mountinfo: str, limits: dict[str, str]) -> str:
    """A folder standing for `/`: `proc/self/cgroup` and `mountinfo`, and each cgroup's limit file."""
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text(cgroup)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(mountinfo)
    for path, value in limits.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(value + "\n")
    return str(tmp_path)


SLURM_TASK = "/system.slice/slurmstepd.scope/job_7/step_0/user/task_0"
CGROUP_CASES = {
    # cgroup v2 under SLURM: --mem sets the job's memory.max; the step, user and task below it say "max".
    "v2, a SLURM job's --mem": (
        f"0::{SLURM_TASK}\n",
        "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        {
            "sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/memory.max": str(4 * 2**30),
            **{
                f"sys/fs/cgroup{SLURM_TASK[: SLURM_TASK.index(p) + len(p)]}/memory.max": "max"
                for p in ("step_0", "task_0")
            },
            "sys/fs/cgroup/memory.max": "max",
        },
        4 * 2**30,
    ),
    # cgroup v1 in a container (docker --memory 2g): the mount's root is the container's cgroup, which
    # /proc/self/cgroup names by its host's path.
    "v1, a container's limit": (
        "12:memory:/docker/abc\n5:cpu,cpuacct:/docker/abc\n0::/\n",
        "41 31 0:38 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
        "42 31 0:39 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n",
        {"sys/fs/cgroup/memory/memory.limit_in_bytes": str(2 * 2**30), "sys/fs/cgroup/cpu,cpuacct/x": "1"},
        2 * 2**30,
    ),
    # This development machine's layout (v1 and v2 mounted side by side): v1's value for no limit, no v2 memory.max.
    "hybrid, no limit": (
        "4:memory:/process_api/a9\n3:cpuset:/\n0::/\n",
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        {
            "sys/fs/cgroup/memory/process_api/a9/memory.limit_in_bytes": "9223372036854771712",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
        },
        None,
    ),
    "no /proc": ("", "", {}, None),
}


@pytest.mark.parametrize("case", CGROUP_CASES)
def test_the_memory_a_cgroup_leaves_this_process(tmp_path, case):
    """A SLURM job's `--mem` or a container's limit is a cgroup's: past it the system kills the process, however
    much RAM the host has. The host memory checks (the loader's batches, an XLA:CPU device) read it."""
    cgroup, mountinfo, limits, want = CGROUP_CASES[case]
    root = _fake_root(tmp_path, cgroup, mountinfo, limits) if cgroup else str(tmp_path)
    assert memory.cgroup_memory_limit(root) == want


def test_host_memory_is_the_ram_or_the_cgroups_limit_if_lower(monkeypatch):
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 2**30)
    assert memory.host_bytes() == 2**30
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: 2 * ram)
    assert memory.host_bytes() == ram
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: None)
    assert memory.host_bytes() == ram
