"""The launchers' shell side, with a stand-in `gcloud` that records what it is asked to copy and run."""

import os
import shutil
import stat
import subprocess
import tarfile

from conftest import ROOT

FAKE_GCLOUD = """#!/usr/bin/env bash
# scp: keep the file sent; ssh: keep the arguments, one per line.
case "$4" in
  scp) cp "$5" "$FAKE_OUT/" ;;
  ssh) printf '%s\\n' "$@" > "$FAKE_OUT/ssh.txt" ;;
esac
"""


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


def test_tpu_pod_launcher_ships_the_checkout_without_runs_or_venv_and_runs_the_command_on_every_worker(tmp_path):
    repo = _checkout(tmp_path)
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(stat.S_IRWXU)
    temp = tmp_path / "temp"  # where the launcher packs the checkout (mktemp's TMPDIR)
    temp.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_OUT": str(out), "TMPDIR": str(temp)}
    cmd = "python -m jaxood.train --config=configs/sot_glp.py --workdir=/mnt/runs/x"
    run = subprocess.run(
        [str(repo / "launch" / "tpu_pod.sh"), "my-tpu", "us-central2-b", cmd], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    with tarfile.open(out / "jaxood_src.tgz") as tar:
        shipped = sorted(name.removeprefix("./") for name in tar.getnames())
    assert shipped == [".gitignore", "launch/tpu_pod.sh", "new_config.py", "setup.cfg"]
    ssh = (out / "ssh.txt").read_text().splitlines()
    assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu"] and "--worker=all" in ssh
    script = "\n".join(ssh[ssh.index("--command") + 1 :])
    assert "tar -xzf /tmp/jaxood_src.tgz" in script
    assert script.index("export JAXOOD_DISTRIBUTED=1") < script.index(cmd)
    assert list(temp.iterdir()) == []  # each launch left its archive, a copy of the checkout, in /tmp


def test_slurm_script_runs_the_command_under_srun_from_the_checkout_and_names_a_missing_venv(tmp_path):
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    (bin_dir / "srun").write_text(
        '#!/usr/bin/env bash\necho "$JAXOOD_DISTRIBUTED $VENV_ON $PWD $*" > "$FAKE_OUT"/srun\n'
    )
    (bin_dir / "srun").chmod(stat.S_IRWXU)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_OUT": str(out)}
    env["SLURM_SUBMIT_DIR"] = str(checkout)
    script = os.path.join(ROOT, "launch", "slurm_gpu.sbatch")
    cmd = ["python", "-m", "jaxood.train", "--config=configs/sot_glp.py", "--workdir=/shared/x"]
    missing = subprocess.run(["bash", script, *cmd], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and f"no .venv/bin/activate in {checkout}: submit from" in missing.stderr
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "activate").write_text("export VENV_ON=yes\n")
    run = subprocess.run(["bash", script, *cmd], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (out / "srun").read_text().split() == ["1", "yes", str(checkout), *cmd]
