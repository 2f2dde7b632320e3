"""The launchers' shell side, with a stand-in `gcloud` that records what it is asked to copy and run."""

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time

from conftest import ROOT

FAKE_GCLOUD = """#!/usr/bin/env bash
# scp: keep the file sent; ssh: keep the arguments, one per line.
case "$4" in
  scp) cp "$5" "$FAKE_OUT/" ;;
  ssh) printf '%s\\n' "$@" > "$FAKE_OUT/ssh.txt" ;;
esac
"""


def _stand_in(bin_dir, name: str, script: str) -> str:
    """An executable `name` in `bin_dir` (made if missing) running `script`; the PATH that finds it first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / name).write_text(script)
    (bin_dir / name).chmod(stat.S_IRWXU)
    return f"{bin_dir}:{os.environ['PATH']}"


def _checkout(tmp_path):
    """A git checkout holding the launcher, with a file git tracks, one it does not know yet, one it ignores
    (runs/, where workdirs go), a tracked file deleted here, and a .venv."""
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "launch", "tpu_pod.sh"), repo / "launch")
    (repo / ".gitignore").write_text(".venv/\n/runs/\n")
    (repo / "setup.cfg").write_text("[metadata]\n")
    (repo / "gone.py").write_text("")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    (repo / "gone.py").unlink()
    (repo / "new_config.py").write_text("")
    for ignored in ("runs/demo/checkpoints/10/params", ".venv/bin/python"):
        (repo / ignored).parent.mkdir(parents=True)
        (repo / ignored).write_bytes(b"\0" * 1000)
    return repo


CMD = "python -m jaxood.train --config=configs/sot_glp.py --workdir=/mnt/runs/x"


def _launch(tmp_path, cmd=CMD, **env_vars) -> tuple[str, list[str], str]:
    """Run `launch/tpu_pod.sh` from a checkout (`_checkout`) with the stand-in `gcloud`: the script it has every
    worker run, gcloud's ssh arguments and what the launcher printed. The archive it sends is in `tmp_path/out`."""
    _checkout(tmp_path)
    return _launch_again(tmp_path, cmd, **env_vars)


def _launch_again(tmp_path, cmd=CMD, **env_vars) -> tuple[str, list[str], str]:
    """`_launch` from the checkout it made in `tmp_path`, as that checkout is now."""
    repo = tmp_path / "repo"
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    path = _stand_in(tmp_path / "bin", "gcloud", FAKE_GCLOUD)
    temp = tmp_path / "temp"  # where the launcher packs the checkout (mktemp's TMPDIR)
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": path, "FAKE_OUT": str(out), "TMPDIR": str(temp)}
    run = subprocess.run(
        [str(repo / "launch" / "tpu_pod.sh"), "my-tpu", "us-central2-b", cmd],
        env={**env, **env_vars},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert list(temp.iterdir()) == []  # each launch left its archive, a copy of the checkout, in /tmp
    ssh = (out / "ssh.txt").read_text().splitlines()
    return "\n".join(ssh[ssh.index("--command") + 1 :]), ssh, run.stdout


def test_tpu_pod_launcher_ships_the_checkout_without_runs_or_venv_and_runs_the_command_on_every_worker(tmp_path):
    script, ssh, _ = _launch(tmp_path)
    with tarfile.open(tmp_path / "out" / "jaxood_src.tgz") as tar:
        shipped = sorted(name.removeprefix("./") for name in tar.getnames())
    assert shipped == [".gitignore", "launch/tpu_pod.sh", "new_config.py", "setup.cfg"]
    assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu"] and "--worker=all" in ssh
    assert "tar -xzf /tmp/jaxood_src.tgz" in script
    assert script.index("export JAXOOD_DISTRIBUTED=1") < script.index(CMD)


def test_tpu_pod_launcher_packs_no_file_metadata_from_a_mac_with_or_without_git(tmp_path):
    """macOS's tar packs each file's extended attributes, as ._<name> files (unless COPYFILE_DISABLE is set) and
    as headers (unless --no-xattrs), which the workers' GNU tar unpacked into the package and warned of, file by
    file. This machine's GNU tar has neither default, so a stand-in tar records what the launcher asks of it. A
    folder without git is packed whole, but for .venv, .git and runs/."""
    real_tar = shutil.which("tar")
    _stand_in(
        tmp_path / "bin",
        "tar",
        f'#!/usr/bin/env bash\necho "${{COPYFILE_DISABLE-unset}} $*" >> "$FAKE_OUT/tar.txt"\nexec {real_tar} "$@"\n',
    )
    _launch(tmp_path)
    shutil.rmtree(tmp_path / "repo" / ".git")
    _launch_again(tmp_path)
    with tarfile.open(tmp_path / "out" / "jaxood_src.tgz") as tar:
        shipped = sorted(m.name.removeprefix("./") for m in tar.getmembers() if m.isfile())
    assert shipped == [".gitignore", "launch/tpu_pod.sh", "new_config.py", "setup.cfg"]
    calls = (tmp_path / "out" / "tar.txt").read_text().splitlines()
    assert len(calls) == 2 and all(call.startswith("1 --no-xattrs ") for call in calls), calls


def test_tpu_pod_launcher_says_when_git_will_not_read_the_checkout_as_another_users(tmp_path):
    """git refuses a repository another user owns ("dubious ownership"): the launcher packed the checkout as a folder
    without git and gave the workers no commit, saying nothing. It says so, with git's fix. git's test switch
    GIT_TEST_ASSUME_DIFFERENT_OWNER stands for the other owner."""
    script, _, said = _launch(tmp_path, GIT_TEST_ASSUME_DIFFERENT_OWNER="1")
    repo = tmp_path / "repo"
    assert said.splitlines() == [
        f"note: git will not read the checkout {repo}, which another user owns (git's safe.directory check): the "
        "workers get the whole folder (but .venv, .git and runs/) and their reports name no commit. To let it: git "
        f"config --global --add safe.directory {repo}"
    ]
    assert "export JAXOOD_SOURCE=''" in script


INSTALL = ("pip install -q -U pip\n", "pip install -q 'jax[tpu]' gcsfs -e .\n")


def _on_a_worker(script: str, home, path: str, sent) -> subprocess.CompletedProcess:
    """The worker's script run here, in `home`, from the archive `sent` (the launcher's, in its `tmp_path/out`),
    without its install step (which needs the network)."""
    script = script.replace("/tmp/jaxood_src.tgz", str(sent))
    for step in INSTALL:
        assert step in script
        script = script.replace(step, ":\n")
    return subprocess.run(
        ["bash", "-c", script], env={**os.environ, "HOME": str(home), "PATH": path}, capture_output=True, text=True
    )


def _sent(tmp_path):
    return tmp_path / "out" / "jaxood_src.tgz"


def test_tpu_pod_launcher_stops_on_a_worker_whose_python_is_older_than_3_11_naming_the_fix(tmp_path):
    """TPU VM images on Ubuntu 22.04 have Python 3.10 as python3, where `pip install -e .` failed on every worker
    with pip's "requires a different Python"."""
    script, _, _ = _launch(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    path = _stand_in(  # Python 3.10: its version, and False to `sys.version_info >= (3, 11)`
        tmp_path / "worker_bin",
        "python3",
        '#!/usr/bin/env bash\nif [ "$1" = --version ]; then echo "Python 3.10.12"; else exit 1; fi\n',
    )
    old = _on_a_worker(script, home, path, _sent(tmp_path))
    assert old.returncode == 1
    assert "jaxood needs Python 3.11 or later, and this worker's python3 is Python 3.10.12" in old.stderr
    assert "launch again with WORKER_PYTHON=python3.11" in old.stderr
    assert not (home / "jaxood").exists()  # stopped before unpacking or making a venv
    missing = _on_a_worker(_launch(tmp_path / "b", WORKER_PYTHON="python3.99")[0], home, path, _sent(tmp_path / "b"))
    assert missing.returncode == 1 and "this worker's python3.99 is not found" in missing.stderr


def test_tpu_pod_launcher_makes_again_a_venv_of_another_python_on_a_worker(tmp_path):
    """`python3.11 -m venv .venv` over a venv of Python 3.10 kept its 3.10 interpreter."""
    script, _, _ = _launch(tmp_path, "true", WORKER_PYTHON=sys.executable)
    home = tmp_path / "home"
    (home / "jaxood" / ".venv" / "bin").mkdir(parents=True)
    older = home / "jaxood" / ".venv" / "bin" / "python"
    older.write_text("#!/usr/bin/env bash\necho '(3, 10)'\n")
    older.chmod(stat.S_IRWXU)
    run = _on_a_worker(script, home, os.environ["PATH"], _sent(tmp_path))
    assert run.returncode == 0, run.stderr
    version = subprocess.run([str(older), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True)
    assert version.stdout.decode().strip() == str(sys.version_info[:2])
    assert (home / "jaxood" / "setup.cfg").exists()  # the checkout unpacked beside it


def test_a_worker_that_cannot_unpack_the_checkout_stops_there(tmp_path):
    """A failure inside an && list does not stop a `set -e` script: a worker whose archive did not unpack went on to
    make a venv in its home folder and install from there."""
    script, _, _ = _launch(tmp_path, "echo the command ran", WORKER_PYTHON=sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    run = _on_a_worker(script, home, os.environ["PATH"], tmp_path / "nowhere.tgz")
    assert run.returncode != 0 and "nowhere.tgz" in run.stderr
    assert "the command ran" not in run.stdout and not (home / ".venv").exists()
    assert os.listdir(home / "jaxood") == []  # nor the list of the files it was to ship (.jaxood_shipped.<host>)


def test_a_worker_removes_the_files_an_earlier_launch_shipped_and_this_one_does_not(tmp_path):
    """Each launch unpacked over the last: a file deleted or renamed in the checkout since stayed on the workers, and a
    package made a module (pkg/mod/__init__.py into pkg/mod.py) kept running as the package, which Python imports
    first. Only the files a launch shipped go: a workdir under runs/, the venv and the worker's own files stay. A
    launch from a folder without git (its archive's names begin with ./) removes none it ships."""
    repo = _checkout(tmp_path)
    (repo / "pkg" / "mod").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "mod" / "__init__.py").write_text("WHICH = 'the package'\n")
    cmd = "python -c 'import pkg.mod; print(pkg.mod.WHICH)'"
    home = tmp_path / "home"
    home.mkdir()
    worker = home / "jaxood"

    def launch() -> str:
        script, _, _ = _launch_again(tmp_path, cmd, WORKER_PYTHON=sys.executable)
        run = _on_a_worker(script, home, os.environ["PATH"], _sent(tmp_path))
        assert run.returncode == 0, run.stderr
        return run.stdout.splitlines()[-1]

    assert launch() == "the package"
    for own in ("runs/x/checkpoints/10/params", "notes.txt"):
        (worker / own).parent.mkdir(parents=True, exist_ok=True)
        (worker / own).write_text("")
    shutil.rmtree(repo / "pkg" / "mod")
    (repo / "pkg" / "mod.py").write_text("WHICH = 'the module'\n")
    (repo / "new_config.py").unlink()
    assert launch() == "the module"
    want = [".gitignore", ".jaxood_shipped", "launch/tpu_pod.sh", "notes.txt", "pkg/__init__.py", "pkg/mod.py"]
    want += ["runs/x/checkpoints/10/params", "setup.cfg"]
    assert _files(worker) == want
    shutil.rmtree(repo / ".git")
    assert launch() == "the module"
    assert _files(worker) == want


def _files(folder) -> list[str]:
    """The files under `folder`, but for its venv and Python's caches."""
    every = (f.relative_to(folder) for f in folder.rglob("*") if f.is_file())
    return sorted(str(f) for f in every if not {".venv", "__pycache__"} & set(f.parts))


def _log_when(log, done, seconds: float = 30) -> str:
    """The text of a detached run's `log` once `done(text)` holds, or after `seconds`; the caller's assertions then
    say what was missing."""
    deadline = time.monotonic() + seconds
    while not done(text := log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


def test_tpu_pod_workers_get_the_commit_of_the_checkout_for_their_reports(tmp_path):
    """The workers run from a copy without git's history, so their reports named no commit (`report.source`): the
    launcher gives them the checkout's in $JAXOOD_SOURCE, with the hash of its uncommitted changes where it has
    some (a new module in the package too), as `report.source` gives it in the checkout."""
    import hashlib
    import json

    from jaxood import report

    cmd = f"{sys.executable} -c 'import json; from jaxood import report; print(json.dumps(report.launched_source()))'"
    home = tmp_path / "home"
    home.mkdir()
    repo = tmp_path / "repo"
    git = lambda *args: subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout  # noqa: E731
    _checkout(tmp_path)
    (repo / "setup.cfg").write_text("[metadata]\nname = x\n")  # a tracked file changed, beside gone.py deleted
    (repo / "jaxood").mkdir()
    (repo / "jaxood" / "new.py").write_text("Y = 1\n")  # a module git does not track yet
    (repo / "jaxood" / "dangling").symlink_to(repo / "nowhere")  # a link to nothing: its path alone
    (tmp_path / "order").write_text("setup.cfg\n*\n")  # git's setting of its diffs' file order: no other hash
    settings = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "diff.orderFile",
        "GIT_CONFIG_VALUE_0": str(tmp_path / "order"),
    }
    commit = ("-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "commit", "-qam", "y")
    tracked = b"gone.py\0\0setup.cfg\0[metadata]\nname = x\n\0"
    new = b"jaxood/dangling\0\0jaxood/new.py\0Y = 1\n\0"
    # The tracked changes and the new files; the tracked changes committed; the new files committed too: clean
    for step, hashed in enumerate((tracked + new, new, b"")):
        if step == 1:
            git(*commit)
        if step == 2:
            git("add", "jaxood")
            git(*commit)
        script = _launch_again(tmp_path, cmd, WORKER_PYTHON=sys.executable, **settings)[0]
        ran = _on_a_worker(script, home, os.environ["PATH"], _sent(tmp_path))
        assert ran.returncode == 0, ran.stderr
        assert bool(git("diff", "HEAD")) == (step == 0)
        diff = hashlib.sha256(hashed).hexdigest()[:16] if hashed else None
        want = {"commit": git("rev-parse", "HEAD").decode().strip(), "dirty": bool(hashed), "diff": diff}
        assert json.loads(ran.stdout.splitlines()[-1]) == want == report.source(str(repo / "jaxood"))


def test_tpu_pod_launcher_hashes_the_changes_with_shasum_where_sha256sum_is_missing(tmp_path):
    """macOS has `shasum -a 256`, not GNU's `sha256sum`: the launcher takes it there, and gives the same hash. The
    launcher runs with a PATH of the tools it needs, sha256sum not among them."""
    import hashlib
    import json

    tools = tmp_path / "tools"
    tools.mkdir()
    # cp for the stand-in gcloud
    for tool in ("bash", "git", "mktemp", "rm", "dirname", "tar", "gzip", "cut", "cat", "shasum", "cp"):
        (tools / tool).symlink_to(shutil.which(tool))
    script = _launch(tmp_path, PATH=f"{tmp_path / 'bin'}:{tools}")[0]
    export = next(line for line in script.splitlines() if "export JAXOOD_SOURCE=" in line)
    given = subprocess.run(["bash", "-c", f'{export}; printf %s "$JAXOOD_SOURCE"'], capture_output=True, text=True)
    diff = hashlib.sha256(b"gone.py\0\0").hexdigest()[:16]  # _checkout's changes: gone.py deleted
    assert json.loads(given.stdout)["diff"] == diff, given


def test_tpu_pod_launcher_runs_the_command_in_the_session_or_detached_with_a_log(tmp_path):
    """In the ssh session a dropped connection stops the run on every worker; DETACH=1 starts it in the background,
    its output appended to ~/jaxood/launch.log, and says how to follow and stop it. The stop command it prints sends
    SIGTERM to that run's processes alone; it matched every jaxood command on the worker (`pkill -f`)."""
    cmd = "echo \"from $JAXOOD_DISTRIBUTED\"; sleep 1; echo 'it ran'"
    home = tmp_path / "home"
    home.mkdir()
    attached = _on_a_worker(
        _launch(tmp_path / "a", cmd, WORKER_PYTHON=sys.executable)[0], home, os.environ["PATH"], _sent(tmp_path / "a")
    )
    assert attached.returncode == 0 and attached.stdout.splitlines()[-2:] == ["from 1", "it ran"]
    script, _, said = _launch(tmp_path, cmd, WORKER_PYTHON=sys.executable, DETACH="1")
    assert "--worker=0 --command 'tail -f ~/jaxood/launch.log'" in said
    stop = "kill -TERM -- -$(cat ~/jaxood/launch.pid)"
    assert f"--worker=all --command '{stop}'" in said
    log = home / "jaxood" / "launch.log"
    for launch in (1, 2):
        detached = _on_a_worker(script, home, os.environ["PATH"], _sent(tmp_path))
        assert detached.returncode == 0, detached.stderr
        assert "started in the background" in detached.stdout and "it ran" not in detached.stdout
        lines = _log_when(log, lambda text, launch=launch: text.count("it ran") >= launch).splitlines()
        assert len(lines) == 3 * launch and lines[-3].startswith("== launched ")
        assert lines[-2:] == ["from 1", "it ran"]  # after the earlier launch's output
    # A run that goes on until stopped, its shell and its child (sleep) in one process group, and another jaxood
    # command running beside it (its command line as `python -m jaxood.evaluate ...` has it)
    forever = "trap 'echo stopped by SIGTERM; exit 0' TERM; echo running; while :; do sleep 0.1; done"
    script, _, _ = _launch(tmp_path / "b", forever, WORKER_PYTHON=sys.executable, DETACH="1")
    beside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "jaxood.evaluate"])
    try:
        assert _on_a_worker(script, home, os.environ["PATH"], _sent(tmp_path / "b")).returncode == 0
        _log_when(log, lambda text: text.endswith("running\n"))
        assert subprocess.run(["bash", "-c", stop], env={**os.environ, "HOME": str(home)}).returncode == 0
        # this launch's lines; bash says "Terminated" of the sleep stopped with the run
        last = _log_when(log, lambda text: text.endswith("stopped by SIGTERM\n")).split("== launched ")[-1]
        assert "\nrunning\n" in last and last.endswith("\nstopped by SIGTERM\n") and beside.poll() is None
    finally:
        beside.kill()
    refused = subprocess.run(
        [str(tmp_path / "repo" / "launch" / "tpu_pod.sh"), "t", "z", "true"],
        env={**os.environ, "DETACH": "yes"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "DETACH must be 0 or 1, not 'yes'" in refused.stderr


def test_slurm_script_runs_the_command_under_srun_from_the_checkout_and_names_a_missing_venv(tmp_path):
    """It also passes the job's CPUs per task on to srun's task: since SLURM 22.05 srun does not take them from the job
    (`--cpus-per-task`, in the script's header) unless SRUN_CPUS_PER_TASK says so, and its task got one CPU."""
    out = tmp_path / "out"
    out.mkdir()
    path = _stand_in(
        tmp_path / "bin",
        "srun",
        "#!/usr/bin/env bash\n"
        'echo "$JAXOOD_DISTRIBUTED $VENV_ON ${SRUN_CPUS_PER_TASK:-unset} $PWD $*" > "$FAKE_OUT"/srun\n',
    )
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.endswith("CPUS_PER_TASK")}
    env.update(PATH=path, FAKE_OUT=str(out), SLURM_CPUS_PER_TASK="32")
    env["SLURM_SUBMIT_DIR"] = str(checkout)
    script = os.path.join(ROOT, "launch", "slurm_gpu.sbatch")
    cmd = ["python", "-m", "jaxood.train", "--config=configs/sot_glp.py", "--workdir=/shared/x"]
    missing = subprocess.run(["bash", script, *cmd], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and f"no .venv/bin/activate in {checkout}: submit from" in missing.stderr
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "activate").write_text("export VENV_ON=yes\n")
    run = subprocess.run(["bash", script, *cmd], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (out / "srun").read_text().split() == ["1", "yes", "32", str(checkout), *cmd]
    del env["SLURM_CPUS_PER_TASK"]  # a job without --cpus-per-task: srun's own default stays
    run = subprocess.run(["bash", script, *cmd], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (out / "srun").read_text().split() == ["1", "yes", "unset", str(checkout), *cmd]


def _slurm_batch_env(tmp_path, **variables) -> dict:
    """The SLURM launcher's batch environment for one node: a checkout with a venv to activate, a stand-in `srun` that
    runs its command as it is, and SLURM's variables (srun's too) for one task on one node."""
    from test_sot_glp import _free_slurm_job_id

    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "activate").write_text("")
    path = _stand_in(tmp_path / "bin", "srun", '#!/usr/bin/env bash\nexec "$@"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_", "CUDA_")) and k != "XLA_FLAGS"}
    slurm = {"SLURM_JOB_ID": str(_free_slurm_job_id()), "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    slurm |= {"SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_NUM_TASKS": "1"}
    slurm |= {"SLURM_SUBMIT_DIR": str(checkout)}
    return env | slurm | {"PATH": path, "JAX_PLATFORMS": "cpu"} | variables


def test_slurm_script_gives_its_one_task_a_node_every_gpu_of_the_node(tmp_path):
    """Under SLURM, `jax.distributed.initialize()` shows each task one GPU, that of its local rank (JAX's default of
    one process per GPU): the launcher's one task a node used one of the node's 8 GPUs. jaxood's initialisation now
    names them all where a step runs one task a node, counted from CUDA_VISIBLE_DEVICES or SLURM_GPUS_ON_NODE. Run here
    through the script as srun would run it, and read from JAX's setting (this machine has no GPU)."""
    script = os.path.join(ROOT, "launch", "slurm_gpu.sbatch")
    code = (
        "import jax; from jaxood import distributed; distributed.maybe_initialize(); "
        "print(jax.config._read('jax_cuda_visible_devices')); jax.distributed.shutdown()"
    )
    cases = [
        ({"SLURM_GPUS_ON_NODE": "8"}, "0,1,2,3,4,5,6,7"),
        ({"CUDA_VISIBLE_DEVICES": "4,5,6,7", "SLURM_GPUS_ON_NODE": "4"}, "0,1,2,3"),  # CUDA's ordinals of what it shows
        ({"SLURM_GPUS_ON_NODE": "8", "JAX_LOCAL_DEVICE_IDS": "2,3"}, "2,3"),  # the user's own choice stays
        ({"SLURM_GPUS_ON_NODE": "8", "SLURM_STEP_NUM_TASKS": "8"}, "0"),  # a task per GPU: JAX's own choice stays
    ]
    for variables, want in cases:
        env = _slurm_batch_env(tmp_path / str(len(os.listdir(tmp_path))), **variables)
        run = subprocess.run(
            ["bash", script, sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.split()[-1] == want, (variables, run.stdout)


def test_the_gpus_named_to_jax_come_from_slurms_variables_as_they_are(monkeypatch):
    """`slurm_node_gpus` reads SLURM's and CUDA's variables as they come: a count that is not a number, or SLURM's
    "NoDevFiles" for no GPU, names none (JAX's own choice stands) rather than failing as the job starts."""
    from jaxood import distributed

    for name in [k for k in os.environ if k.startswith(("SLURM_", "CUDA_", "ROCR_", "JAX_LOCAL"))]:
        monkeypatch.delenv(name)
    for name, value in {"SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NUM_NODES": "2"}.items():
        monkeypatch.setenv(name, value)
    cases = [
        ({"SLURM_GPUS_ON_NODE": "4"}, [0, 1, 2, 3]),
        ({"SLURM_GPUS_ON_NODE": "4x"}, None),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None),
        ({"ROCR_VISIBLE_DEVICES": "0,1"}, [0, 1]),
        ({"SLURM_GPUS_ON_NODE": "1"}, None),  # one GPU: JAX's choice is that one
    ]
    for variables, want in cases:
        with monkeypatch.context() as m:
            for name, value in variables.items():
                m.setenv(name, value)
            assert distributed.slurm_node_gpus() == want, variables
