#!/usr/bin/env bash
# Run a jaxood command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE "python -m jaxood.train --config=configs/sot_glp.py --workdir=/mnt/shared/runs/x"
#
# Copies this checkout to every worker, installs it, and starts the command on all
# workers at once (JAX needs every host of the slice). JAXOOD_DISTRIBUTED=1 makes
# jaxood call jax.distributed.initialize(), which on TPU VMs finds the coordinator
# by itself. Each host reads only its slice of every batch. Data must be readable
# from every worker (a GCS bucket or identical local copies; set TFDS_DATA_DIR). TFDS reads
# a bucket's metadata through gcsfs, installed here with jaxood, and array_record its records. The workdir (checkpoints are
# written by every worker through orbax) must be a folder every worker mounts at the
# same path, such as a Filestore NFS share; jaxood refuses a gs:// workdir.
#
# jaxood needs Python 3.11 or later. TPU VM images built on Ubuntu 22.04 (tpu-ubuntu2204-base) have 3.10 as
# python3: install a newer one on every worker (sudo apt-get install -y python3.11 python3.11-venv) and name it
# with WORKER_PYTHON=python3.11. A worker whose Python is older stops before installing anything, saying so.
#
# The command runs in the ssh session, so a dropped connection (a laptop gone to sleep) stops it on every worker once
# their ssh servers see it, after saving the step it is at; launched again, it resumes from there (an evaluation goes
# on to write its report). DETACH=1 starts it in the background instead, with its output in ~/$REPO_DIR/launch.log
# on each worker, and prints how to follow and stop it.
set -euo pipefail
TPU_NAME=${1:?TPU name}
ZONE=${2:?zone}
CMD=${3:?command to run}
REPO_DIR=${REPO_DIR:-jaxood}
WORKER_PYTHON=${WORKER_PYTHON:-python3}
DETACH=${DETACH:-0}
case "$DETACH" in 0 | 1) ;; *) echo "error: DETACH must be 0 or 1, not '$DETACH'" >&2; exit 2 ;; esac
cmd_q=$(printf '%q' "$CMD")  # one word for `bash -c` on the worker
here=$(cd "$(dirname "$0")/.." && pwd)

# macOS's tar adds each file's extended attributes to the archive, as ._<name> files beside it (unless
# COPYFILE_DISABLE is set) and as headers (unless --no-xattrs): the workers' GNU tar unpacked the ._ files into the
# package and warned of each header ("Ignoring unknown extended header keyword 'LIBARCHIVE.xattr.com.apple...'").
export COPYFILE_DISABLE=1
# The source: in a git checkout, what git tracks and new files it does not ignore (not .venv, nor runs/ with its
# checkpoints, which would be copied to every worker); otherwise the folder without .venv, .git and runs/.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT  # the archive is a copy of the checkout: one per launch stayed in /tmp
src=$tmp/jaxood_src.tgz
source_json=  # the checkout's commit for the workers' reports (jaxood.report.source), which their copy cannot say
if refused=$(git -C "$here" rev-parse --is-inside-work-tree 2>&1 >/dev/null); then
  (cd "$here" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    if [ -e "$f" ]; then printf '%s\0' "$f"; fi  # not a tracked file deleted here
  done | tar --no-xattrs --null -T - -czf "$src")
  if commit=$(git -C "$here" rev-parse --verify -q HEAD); then  # none in a repository without a commit
    {  # jaxood.report.CHANGED_FILES: the tracked files that differ from HEAD, then the new files in jaxood/
      git -C "$here" diff --name-only -z --no-relative --no-renames -O/dev/null HEAD
      git -C "$here" ls-files -z --others --exclude-standard -- jaxood
    } > "$tmp/changed"
    dirty=false diff=null
    if [ -s "$tmp/changed" ]; then  # the first 16 hex digits of the sha256 of each one's path and bytes, as
      # jaxood.report.source hashes them
      if command -v sha256sum >/dev/null; then sha256=(sha256sum); else sha256=(shasum -a 256); fi  # macOS: shasum
      dirty=true diff=\"$(while IFS= read -r -d '' f; do
        printf '%s\0' "$f"; cat "$here/$f" 2>/dev/null || true; printf '\0'  # deleted, a link to nothing: no bytes
      done < "$tmp/changed" | "${sha256[@]}" | cut -c1-16)\"
    fi
    source_json="{\"commit\": \"$commit\", \"dirty\": $dirty, \"diff\": $diff}"
  fi
else
  case "$refused" in *"dubious ownership in repository at '"*)  # another user's repository (jaxood.report.source)
    repo=${refused#*"dubious ownership in repository at '"}
    repo=${repo%%"'"*}  # as git names it, which its safe.directory must match
    echo "note: git will not read the checkout $repo, which another user owns (git's safe.directory check): the" \
      "workers get the whole folder (but .venv, .git and runs/) and their reports name no commit. To let it:" \
      "git config --global --add safe.directory $repo" ;;
  esac
  tar --no-xattrs -C "$here" --exclude=.venv --exclude=.git --exclude=runs -czf "$src" .
fi
gcloud compute tpus tpu-vm scp "$src" "$TPU_NAME":/tmp/ --zone "$ZONE" --worker=all
ssh=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE")  # the run's ssh, and the one its hints print
"${ssh[@]}" --worker=all --command "
  set -e
  if ! $WORKER_PYTHON -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    found=\$($WORKER_PYTHON --version 2>/dev/null || echo 'not found')
    echo \"error: jaxood needs Python 3.11 or later, and this worker's $WORKER_PYTHON is \$found (TPU VM images on\" \\
      \"Ubuntu 22.04 have Python 3.10). Install a newer one on every worker (sudo apt-get install -y python3.11\" \\
      \"python3.11-venv) and launch again with WORKER_PYTHON=python3.11\" >&2
    exit 1
  fi
  # One command a line: set -e does not stop at a failure inside an && list (a tar that could not unpack went on to
  # install from the home folder).
  mkdir -p ~/$REPO_DIR
  cd ~/$REPO_DIR
  # Each launch unpacks over the last: the files an earlier one shipped that this one does not (deleted or renamed in
  # the checkout since) stayed, and a package made a module (pkg/mod/__init__.py into pkg/mod.py) kept running, as
  # Python imports the package first. Those go, and only those (listed in .jaxood_shipped): not the venv, runs/ or
  # the worker's own files. The new list is made first, so that an archive that cannot be read stops here, and under
  # a name of this worker's, for workers whose home folders are one shared folder.
  new=.jaxood_shipped.\$(hostname)
  tar -tzf /tmp/jaxood_src.tgz --quoting-style=literal > \$new || { rm -f \$new; exit 1; }
  sed -i -e 's|^\\./||' -e '/\\/\$/d' -e '/^\$/d' \$new  # files only, as git names them
  LC_ALL=C sort -o \$new \$new
  if [ -f .jaxood_shipped ]; then
    LC_ALL=C comm -23 .jaxood_shipped \$new | while IFS= read -r f; do [ -d \"\$f\" ] || rm -f -- \"\$f\"; done
  fi
  tar -xzf /tmp/jaxood_src.tgz -C ~/$REPO_DIR
  mv \$new .jaxood_shipped
  # A venv an older launch made with another Python is made again.
  want=\$($WORKER_PYTHON -c 'import sys; print(sys.version_info[:2])')
  have=\$(.venv/bin/python -c 'import sys; print(sys.version_info[:2])' 2>/dev/null || true)
  if [ \"\$have\" = \"\$want\" ]; then $WORKER_PYTHON -m venv .venv; else $WORKER_PYTHON -m venv --clear .venv; fi
  . .venv/bin/activate
  pip install -q -U pip
  pip install -q 'jax[tpu]' gcsfs -e .
  export JAXOOD_DISTRIBUTED=1
  export JAXOOD_SOURCE=$(printf '%q' "$source_json")
  if [ $DETACH = 1 ]; then
    echo \"== launched \$(date -u '+%F %T') UTC\" >> launch.log  # after the earlier launches' output
    # setsid: the run's own process group, whose number (the process's: a shell without job control starts it
    # outside its own group, so setsid does not fork) the stop command reads from launch.pid
    nohup setsid bash -c $cmd_q >> launch.log 2>&1 < /dev/null &
    echo \$! > launch.pid
    echo \"\$(hostname): started in the background (process \$!), its output in ~/$REPO_DIR/launch.log\"
  else
    $CMD
  fi
"
if [ "$DETACH" = 1 ]; then
  echo "Follow worker 0: ${ssh[*]} --worker=0 --command 'tail -f ~/$REPO_DIR/launch.log'"
  stop="kill -TERM -- -\$(cat ~/$REPO_DIR/launch.pid)"  # the run's process group (launch.pid)
  echo "Stop it, saving the step it is at: ${ssh[*]} --worker=all --command '$stop'"
fi
