"""The command lines print jaxood's own errors as their message alone; anything else keeps its traceback."""

import importlib.util
import io
import os
import subprocess
import sys

import ml_collections
import pytest

from jaxood.data.sources import DatasetMissing
from jaxood.errors import InvalidInput, UserError, report_user_errors, write_fix
from jaxood.models.convert import CheckpointMismatch
from jaxood.settings import whole


def _raising(err):
    def main(argv):
        raise err

    return main


KEPT = "What the command kept."  # the end of a test command's Ctrl-C message


def test_user_error_prints_its_message_and_exits_1(capsys, monkeypatch):
    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)
    missing = DatasetMissing("'dtd' is not prepared: run python -m jaxood.data.prepare")
    assert report_user_errors(_raising(missing), KEPT)([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 'dtd' is not prepared: run python -m jaxood.data.prepare\n")
    assert "Traceback" not in err and "JAXOOD_TRACEBACK=1" in err


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, capsys, monkeypatch):
    """Ctrl-C where no handler saves first (here while the weights load) printed a traceback of whatever ran; now one
    line, exit status 130 as a shell gives a command stopped by SIGINT, and the workdir the run made is gone."""
    from conftest import load_config

    from jaxood import train as trainer
    from jaxood.cli import RUN_KEPT
    from jaxood.models import clip

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)
    monkeypatch.setattr(clip, "load", interrupted)
    workdir = tmp_path / "run"
    main = report_user_errors(lambda argv: trainer.train(load_config("sot_glp", "demo"), str(workdir)), RUN_KEPT)
    try:
        status = main([])
    except KeyboardInterrupt:  # uncaught it would stop pytest itself
        pytest.fail("Ctrl-C came through as a KeyboardInterrupt")
    assert status == 130
    err = capsys.readouterr().err
    assert err == "stopped by Ctrl-C. Files written before it are kept: a training run resumes from its last " \
        "checkpoint when the same command runs again.\n"  # fmt: skip
    assert not workdir.exists()
    monkeypatch.setenv("JAXOOD_TRACEBACK", "1")
    with pytest.raises(KeyboardInterrupt):
        main([])


_EXITING = """
import atexit, sys
from jaxood.errors import InvalidInput, StoppedAtOnce, exit_with, report_user_errors
atexit.register(lambda: print("finalised", flush=True))
def main(argv):
    raise {"ctrl-c": KeyboardInterrupt, "sigterm": StoppedAtOnce("stopped by SIGTERM")}.get(argv[0]) or InvalidInput(
        "bad setting"
    )
exit_with(report_user_errors(main, "What it kept.")(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "stop, status, said",
    [("ctrl-c", 130, "stopped by Ctrl-C"), ("sigterm", 1, "error: stopped by SIGTERM"), ("bad", 1, "error: bad")],
)
def test_a_command_stopped_by_a_signal_exits_without_finalising(stop, status, said):
    """After a signal's exception had interrupted an XLA compile (Ctrl-C as the train step compiled, SIGTERM 2 s
    into jaxood.evaluate), the compile ran on in a thread of its own and Python's finalisation crashed
    under it: "Fatal Python error: Segmentation fault" after the message (jax 0.10.2). A command stopped by a
    signal where it was now exits at once (its `with` and `finally` blocks have run); any other exit still
    finalises."""
    done = subprocess.run([sys.executable, "-c", _EXITING, stop], capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr
    assert ("finalised" in done.stdout) == (stop == "bad")
    assert done.stderr.startswith(said), done.stderr


_DROPPED = """
import gc, signal, sys, time
# A Ctrl-C presupposes Python's SIGINT handler; a pytest run started in the background without job control (or under
# nohup) passes SIGINT on ignored, and the simulated Ctrl-C (`_thread.interrupt_main`) then does nothing.
signal.signal(signal.SIGINT, signal.default_int_handler)
import jaxood
raised = []
def callback(phase, info):  # as JAX's gc callback, where Ctrl-C's handler runs if the main thread is in it
    if not raised:
        raised.append(phase)
        raise {
            "ctrl-c": KeyboardInterrupt,
            "stop": jaxood.errors.StoppedAtOnce("stopped by SIGTERM while evaluating"),
            "error": ValueError("a bug"),
        }[sys.argv[1]]
gc.callbacks.append(callback)
try:
    gc.collect()
    end = time.monotonic() + 2
    # Not `while time.monotonic() < end:`, whose backward jump Python 3.13 leaves out of the `try`: a Ctrl-C handled
    # there escaped it (python/cpython#130279; in 8 of 10 runs on 3.13.0)
    while True:
        if time.monotonic() > end:
            break
    print("went on")
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


@pytest.mark.parametrize("raised", ["ctrl-c", "stop", "error"])
def test_a_ctrl_c_python_drops_in_a_gc_callback_stops_the_command(raised):
    """Python drops an exception raised in a garbage-collection callback ("Exception ignored in: ..."), and Ctrl-C's
    KeyboardInterrupt was raised in JAX's whenever the main thread was in it: the Ctrl-C was lost and the command
    went on (jaxood.evaluate, interrupted 0.6-1.2 s after its start while JAX and Flax imported, wrote its whole report
    and exited 0 after 9 of 32 Ctrl-Cs; none since). Importing jaxood raises it again, out of the callback. An
    evaluation's stop dropped there, which its handler raises again itself, is not said twice (its traceback came
    before the stop's own line); any other exception there is still said as Python says it."""
    done = subprocess.run([sys.executable, "-c", _DROPPED, raised], capture_output=True, text=True, timeout=60)
    if raised == "error":
        assert done.stdout == "went on\n" and "Exception ignored" in done.stderr and "ValueError: a bug" in done.stderr
    else:
        assert (done.stdout, done.stderr) == ({"ctrl-c": "stopped\n", "stop": "went on\n"}[raised], "")


@pytest.mark.parametrize("case", ["ctrl-c", "ctrl-c in a compiled module", "traceback", "error", "library"])
def test_a_ctrl_c_as_a_command_starts_is_said_in_one_line(case, tmp_path):
    """Ctrl-C in a command's first seconds, as its modules import (1.8 s of jaxood.train's start), ended on Python's
    traceback through Flax's and JAX's imports: it says jaxood's line, with nothing written and status 130, as a
    later Ctrl-C does, and so does one that a compiled module's import turned into an ImportError (tensorstore's,
    seen 1.2-1.3 s into jaxood.train). `JAXOOD_TRACEBACK=1` keeps the traceback; an error in the imports
    is said as Python says it, and so is a Ctrl-C in another program that imported jaxood. The Ctrl-C is raised by
    a Flax that shadows the real one, where `jaxood.train` imports it."""
    from jaxood.errors import INTERRUPTED, STARTING_KEPT

    (tmp_path / "flax").mkdir()
    raises = {
        "error": "raise ImportError('a broken flax')",
        # pybind11's module init (tensorstore's, as orbax imports it), where Ctrl-C interrupted it
        "ctrl-c in a compiled module": "raise ImportError('initialization failed') from KeyboardInterrupt()",
    }.get(case, "raise KeyboardInterrupt")
    (tmp_path / "flax" / "__init__.py").write_text(raises + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "JAXOOD_TRACEBACK"} | {"PYTHONPATH": str(tmp_path)}
    if case == "traceback":
        env["JAXOOD_TRACEBACK"] = "1"
    run = ["-m", "jaxood.train", "--config=configs/sot_glp.py:demo", f"--workdir={tmp_path / 'run'}"]
    if case == "library":
        run = ["-c", "import jaxood, flax"]
    done = subprocess.run([sys.executable, *run], capture_output=True, text=True, env=env, timeout=120)
    assert not (tmp_path / "run").exists()
    if case.startswith("ctrl-c"):
        assert (done.returncode, done.stderr) == (130, f"{INTERRUPTED} {STARTING_KEPT}\n")
    else:
        assert done.returncode != 130 and "Traceback" in done.stderr
        assert done.stderr.rstrip().endswith("ImportError: a broken flax" if case == "error" else "KeyboardInterrupt")


@pytest.mark.parametrize(
    "value, choices, message",
    [
        ("epochs", ("step", "epoch"), "x must be one of 'step' or 'epoch', got 'epochs' (did you mean 'epoch'?)"),
        ("MOS", ("mos", "toy"), "x must be one of 'mos' or 'toy', got 'MOS' (did you mean 'mos'?)"),
        ("fp16", ("auto", "float32", "float16"), "x must be one of 'auto', 'float32' or 'float16', got 'fp16'"),
        ("b", ("a",), "x must be 'a', got 'b'"),
        (
            "pets",
            ("caltech101", "oxford_pets"),
            "x must be one of 'caltech101' or 'oxford_pets', got 'pets' (did you mean 'oxford_pets'?)",
        ),
        ("ox", ("caltech101", "oxford_pets"), "x must be one of 'caltech101' or 'oxford_pets', got 'ox'"),
        ("ford", ("oxford_pets", "oxford_flowers"), "x must be one of 'oxford_pets' or 'oxford_flowers', got 'ford'"),
        (3, (None, "vv"), "x must be one of None or 'vv', got 3"),
    ],
)
def test_a_setting_none_of_its_choices_is_answered_with_the_nearest(value, choices, message):
    """Every setting with a fixed set of choices words its refusal as `not_one_of` does, with the nearest choice where
    one is close (difflib, in any case), or the one choice that holds it (not two, nor a part shorter than 3), as a
    mistyped config key is answered; each listed its choices its own way."""
    from jaxood.errors import not_one_of

    assert not_one_of("x", value, choices) == message


@pytest.mark.parametrize(
    "orig_argv, argv, hooked",
    [
        (["python", "-m", "jaxood.train", "--workdir=w"], ["-m", "--workdir=w"], True),
        (["python", "-X", "importtime", "-mjaxood.evaluate"], ["-m"], True),
        (["python", "-m", "pytest", "tests"], ["-m", "tests"], False),  # a program that imports jaxood
        (["python", "-c", "import jaxood", "-m", "jaxood.train"], ["-c", "-m", "jaxood.train"], False),
    ],
)
def test_the_hook_for_a_stop_as_a_command_starts_gives_way_to_its_handler(orig_argv, argv, hooked, monkeypatch):
    """`python -m jaxood.<command>` alone gets the hook that says a Ctrl-C as it starts, and only until its own handler
    runs (`report_user_errors`): a Ctrl-C that escaped that handler (a second one as it said the first) would have
    said "nothing was written" of a run that saved checkpoints."""
    from jaxood import errors

    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.setattr(errors, "_excepthook_before", sys.__excepthook__)
    errors.say_a_stop_while_starting()
    assert (sys.excepthook is errors._stopped_while_starting) == hooked
    in_the_handler = []
    report_user_errors(lambda argv: in_the_handler.append(sys.excepthook), KEPT)([])
    assert in_the_handler == [sys.__excepthook__]


def _lacking(read):
    def main(argv):
        config = ml_collections.ConfigDict({"seed": 1, "optim": {"lr": 0.1, "momentum": 0.9}})
        read(config)

    return main


@pytest.mark.parametrize(
    "read, key",
    [
        (lambda config: config.optim.warmup, "optim.warmup"),
        (lambda config: config["optim"]["wd"], "optim.wd"),
        (lambda config: whole(config, "optim.steps", 1), "optim.steps"),
        (lambda config: config.dtype, "dtype"),
    ],
)
def test_a_key_the_config_lacks_is_named_with_the_fix(read, key, capsys, monkeypatch):
    """A config file written by hand, or for an earlier jaxood, that lacks a key the command reads was a KeyError's
    (`config["x"]`, `jaxood.settings`) or AttributeError's (`config.x`) traceback of ml_collections' internals, naming
    the key's last part alone."""
    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)
    assert report_user_errors(_lacking(read), KEPT)([]) == 1
    assert capsys.readouterr().err == (
        f"error: the config has no key {key}, which this command reads: a config file written by hand, or for an "
        "earlier jaxood, holds every key of the shipped config file it follows (docs/config.md lists them, with "
        "their defaults)\n(JAXOOD_TRACEBACK=1 shows where it was raised)\n"
    )
    monkeypatch.setenv("JAXOOD_TRACEBACK", "1")
    with pytest.raises(InvalidInput):
        report_user_errors(_lacking(read), KEPT)([])


def test_a_config_write_jaxood_did_not_mean_keeps_its_traceback(monkeypatch):
    """A key added to a locked config is ml_collections' KeyError too, from `__setitem__`: jaxood's bug, not a key
    the config lacks."""
    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)

    def add(config):
        config.lock()
        config.optim.warmup = 5

    with pytest.raises(AttributeError, match="warmup"):
        report_user_errors(_lacking(add), KEPT)([])


def test_other_errors_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)
    with pytest.raises(ZeroDivisionError):
        report_user_errors(_raising(ZeroDivisionError("a bug")), KEPT)([])


def test_a_command_whose_output_reader_left_stops_quietly(tmp_path, monkeypatch):
    """`python -m jaxood.summarize RUN | head` printed a BrokenPipeError's traceback once `head` had read its lines.
    Output whose reader left now stops the command with no message and status 141, as a shell gives a command
    stopped by SIGPIPE (here the pipe's reading end is closed before the command prints). A BrokenPipeError whose
    output is still read (another pipe's) is a bug, with its traceback."""
    import json

    from jaxood.errors import OUTPUT_CLOSED_STATUS, output_closed

    (tmp_path / "run").mkdir()
    report = {"id_accuracy": {"SOT-GLP": 0.5}, "ood": {}, "counts": {"id": 2}}
    (tmp_path / "run" / "results.json").write_text(json.dumps(report))
    read, write = os.pipe()
    with os.fdopen(os.dup(write), "w") as stream:
        assert not output_closed(stream)
        os.close(read)
        assert output_closed(stream)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jaxood.summarize", str(tmp_path / "run")],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (OUTPUT_CLOSED_STATUS, "") == (141, "")
    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)
    with pytest.raises(BrokenPipeError):
        report_user_errors(_raising(BrokenPipeError(32, "Broken pipe")), KEPT)([])


@pytest.mark.parametrize("status", [None, 0, 1])
def test_only_a_failed_host_of_a_job_leaves_it_before_exiting(status, monkeypatch):
    """A host that failed gives the others `LEAVE_SECONDS` to end too (JAX's shutdown barrier). One that succeeded
    exits as usual: its `main` returned None, and that once counted as a failure, so a host done before the
    first (which writes the report) would leave after 10 s and leave the first failing in its own barrier."""
    from jaxood import errors

    leaving = []
    monkeypatch.setattr(errors, "_in_a_job", lambda: True)
    monkeypatch.setattr(errors, "_left_the_job", lambda: leaving.append(status) or True)
    with pytest.raises(SystemExit) as exited:
        errors.exit_with(status)
    assert exited.value.code == status and leaving == ([status] if status else [])


def test_traceback_on_request(monkeypatch):
    monkeypatch.setenv("JAXOOD_TRACEBACK", "1")
    with pytest.raises(InvalidInput):
        report_user_errors(_raising(InvalidInput("bad setting")), KEPT)([])


def test_user_errors_are_still_the_builtin_errors_they_refine():
    assert issubclass(DatasetMissing, FileNotFoundError) and issubclass(DatasetMissing, UserError)
    assert issubclass(CheckpointMismatch, ValueError) and issubclass(CheckpointMismatch, UserError)
    assert report_user_errors(lambda argv: 0, KEPT)([]) == 0


CHECK = "Check that folder and the disk that holds it"


@pytest.mark.parametrize(
    "error, fix",
    [
        (OSError(28, "No space left on device"), "Free space there"),
        (OSError(122, "Disk quota exceeded"), "Free space there"),
        (PermissionError(13, "Permission denied"), "Make that folder writable"),
        (ValueError("Failed to write: Read-only file system [os_error_code='30']"), "Make that folder writable"),
        (OSError(5, "Input/output error"), CHECK),
        (ValueError("Failed to write: Input/output error [os_error_code='5']"), CHECK),
        (NotADirectoryError(20, "Not a directory"), CHECK),
    ],
)
def test_a_failed_write_is_told_the_fix_its_error_number_calls_for(error, fix):
    """A write that failed for another reason than room or refusal (a failing disk or network mount, a folder that
    became a file) was told to free space."""
    assert write_fix(error, "that folder", room="Free space there") == fix
    cause = RuntimeError("orbax's wrapper")
    cause.__cause__ = error
    assert write_fix(cause, "that folder", room="Free space there") == fix


def test_jaxoods_commands_on_windows_say_they_need_a_posix_system():
    """The commands lock their workdir with fcntl and save a run on SIGHUP: on Windows importing them failed with a
    traceback of the missing module. Windows is played here by taking both away before jaxood is imported; its
    models, scores and data load without them."""
    windows = "import signal, sys; sys.modules['fcntl'] = None; del signal.SIGHUP; "
    for module in ("jaxood.train", "jaxood.workdir_lock", "jaxood.preemption"):
        run = subprocess.run([sys.executable, "-c", windows + f"import {module}"], capture_output=True, text=True)
        assert run.returncode == 1, module
        assert "ImportError: jaxood's commands (training, evaluation, pretraining) need a POSIX system" in run.stderr
        assert "On Windows, run them inside WSL." in run.stderr
    library = "from jaxood.models import clip; from jaxood.scores import metrics; from jaxood.data import pipeline"
    subprocess.run([sys.executable, "-c", windows + library], check=True, capture_output=True)


@pytest.mark.parametrize(
    "platform, reason",
    [
        pytest.param(
            "cuda",
            "",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("jax_plugins") is not None, reason="a JAX plugin is here"
            ),
        ),
        ("nopu", " (Unable to initialize backend 'nopu': Backend 'nopu' is not in the list of known backends: "),
    ],
)
def test_a_platform_jax_cannot_start_is_one_line_with_the_fix(platform, reason, tmp_path):
    """JAX_PLATFORMS=cuda with the CPU-only JAX that `pip install -e .` gives (a cluster's module may set it) was a
    traceback ending in a bare AssertionError (jax 0.10.2) at the first use of the devices, and a platform JAX does
    not know was a traceback too. The cuda case needs a JAX without its CUDA plugin (jax_plugins)."""
    from conftest import ROOT

    command = [sys.executable, "-m", "jaxood.evaluate", "--config=configs/zeroshot.py:toy", f"--workdir={tmp_path}/w"]
    env = dict(os.environ, JAX_PLATFORMS=platform)
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and run.stderr.startswith(
        f"error: JAX cannot start the platform(s) JAX_PLATFORMS={platform!r} asks for{reason}"
    ), run.stderr
    assert run.stderr.endswith(
        ': install JAX for them (NVIDIA GPUs: pip install "jax[cuda12]"; a TPU VM: pip install "jax[tpu]"), or unset '
        "JAX_PLATFORMS to run on the devices JAX finds (the CPU at least)\n(JAXOOD_TRACEBACK=1 shows where it was "
        "raised)\n"
    ), run.stderr
    assert not os.path.exists(f"{tmp_path}/w")


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_a_commands_output_escapes_what_its_encoding_cannot_hold(encoding, monkeypatch):
    """A file name that is no UTF-8 (a Latin-1 archive's; Python holds its bytes as surrogates) in a log line stopped
    the run with UnicodeEncodeError on a UTF-8 terminal, and any name outside ASCII did under an ASCII locale
    (LC_ALL=C with PYTHONUTF8=0). Both are now printed as escapes, as Python's stderr prints them."""
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)

    def main(argv):
        print("left out: x/note\udce9.txt; set café")

    assert report_user_errors(main, KEPT)([]) is None
    printed = out.buffer.getvalue().decode(encoding)
    assert printed == ("left out: x/note\\udce9.txt; set " + ("café" if encoding == "utf-8" else "caf\\xe9") + "\n")


def test_jaxoods_files_are_utf_8_whatever_the_locale(tmp_path):
    """jaxood's text files (results.md, a config it reads or writes) were read and written in the locale's
    encoding: under an ASCII locale writing results.md for a set named 'café' raised UnicodeEncodeError, and a
    config.json in UTF-8 (JSON's encoding, as Hugging Face writes and reads it) could not be read."""
    (tmp_path / "config.json").write_bytes('{"_name_or_path": "/models/café"}'.encode())
    script = f"""
import json, os
from jaxood import report
from jaxood.cache import write_whole
from jaxood.models.clip import read_json_mapping
assert read_json_mapping({str(tmp_path / "config.json")!r}) == {{"_name_or_path": "/models/café"}}
results = {{"ood": {{}}, "counts": {{"id": 3, "café": 2}}, "id_accuracy": {{"m": 0.5}}}}
report.write({str(tmp_path)!r}, results)
with write_whole({str(tmp_path / "w.txt")!r}) as f:
    f.write("café")
"""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    (tmp_path / "write.py").write_text(script, encoding="utf-8")  # a source file is UTF-8; a -c argument the locale's
    out = subprocess.run([sys.executable, str(tmp_path / "write.py")], env=env, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    assert "OOD: café 2" in (tmp_path / "results.md").read_bytes().decode("utf-8")
    assert (tmp_path / "w.txt").read_bytes() == "café".encode()


def test_a_file_this_user_may_not_read_is_said_without_a_traceback(tmp_path, capsys, monkeypatch):
    """A model's weights or folder this user may not read (a copy made with another user's umask) stopped a command
    with PermissionError's traceback, and a model folder it may not list was said to have no config.json. Each is
    now one line naming the file and the fix; root reads every file, so os.access plays the refusal."""
    from jaxood.models import clip

    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)
    weights = str(tmp_path / "params.msgpack")
    assert report_user_errors(_raising(PermissionError(13, "Permission denied", weights)), KEPT)([]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {weights}: Permission denied. Their owner can let this user read them: `chmod -R a+rX` on the folder "
        "that holds them.\n"
    )
    assert "Traceback" not in err
    model = str(tmp_path / "model")
    os.mkdir(model)
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != model)
    with pytest.raises(PermissionError) as raised:
        clip.load(model)
    assert raised.value.filename == model and raised.value.errno == 13


@pytest.mark.parametrize("command", ["summarize", "wordnet"])
def test_an_out_file_that_cannot_be_written_is_named_with_the_fix(command, tmp_path, capsys, monkeypatch):
    """`--out` of `jaxood.summarize` and of the WordNet pool's builder, where it cannot be written, stopped the command
    with a traceback (a folder given, a path under a file, a full disk), or said a folder this user may not write was
    one it may not read; an empty one wrote nothing (summarize) or named no file. Each is now one line naming the file,
    why, and the fix, and a file there before is kept."""
    import json

    from jaxood import cache, summarize
    from jaxood.cache import OUT_KEPT
    from jaxood.scores import wordnet

    monkeypatch.delenv("JAXOOD_TRACEBACK", raising=False)
    if command == "summarize":
        (tmp_path / "run").mkdir()
        report = {"id_accuracy": {"zero-shot": 0.5}, "ood": {}, "counts": {"id": 2}, "config": {}, "source": None}
        (tmp_path / "run" / "results.json").write_text(json.dumps(report))
        main, argv, what = (
            report_user_errors(summarize.main, OUT_KEPT),
            [str(tmp_path / "run")],
            "the summary (printed above)",
        )
    else:
        (tmp_path / "data.noun").write_text("00001740 03 n 01 entity 0 000 | a gloss\n")
        (tmp_path / "data.adj").write_text("")
        main, argv, what = report_user_errors(wordnet.main, OUT_KEPT), [f"--wordnet_dir={tmp_path}"], "the pool"
    (tmp_path / "file").write_text("kept")

    def said(out: str, refusal: OSError | None = None) -> str:
        def refused(*args, **kwargs):
            raise refusal

        with monkeypatch.context() as patched:
            if refusal:  # root writes every folder: the system's refusal is played
                patched.setattr(cache.tempfile, "mkstemp", refused)
            assert main([*argv, f"--out={out}"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {what} could not be written to {out} (") and "Traceback" not in err
        return err.splitlines()[0]

    assert main([*argv, "--out="]) == 1  # a shell variable not set: nothing was written, unsaid, or no file named
    assert capsys.readouterr().err.startswith(
        f"error: --out is empty (a shell variable that is not set, as in --out=$FILE?): give a file's path for {what}\n"
    )
    assert said(str(tmp_path)).endswith("(it is a folder). Give a file's path as --out")
    assert said(f"{tmp_path}/file/out.md").endswith(f"({tmp_path}/file is a file). Give --out in a folder")
    refused = PermissionError(13, "Permission denied")
    assert said(f"{tmp_path}/file", refused).endswith(
        f"(Permission denied). Make {tmp_path} writable, or give another --out"
    )
    full = OSError(28, "No space left on device")
    assert said(f"{tmp_path}/file", full).endswith(
        f"(No space left on device). Free space in {tmp_path}, or give another --out"
    )
    assert (tmp_path / "file").read_text() == "kept"


@pytest.mark.parametrize(
    "module",
    ["jaxood.summarize", "jaxood.data.prepare", "jaxood.scores.wordnet", "jaxood.bench.sot_glp", "jaxood.bench.data"],
)
def test_a_commands_usage_names_how_it_is_run(module, capsys):
    """argparse named the command by its file (`usage: prepare.py`, `prepare.py: error: ...`), which cannot be run
    as such: each says `python -m <module>`, as it is run."""
    import importlib

    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(["--no_such_flag"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m {module} ") and f"\npython -m {module}: error: " in err, err
