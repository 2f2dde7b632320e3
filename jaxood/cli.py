"""Command-line flags shared by `jaxood.train`, `jaxood.evaluate` and `jaxood.pretrain`.

`--config=configs/<file>.py[:variant]` is an ml_collections config file read
with `lock_config=True`, so `--config.<key>=...` with an unknown key fails
before any work starts, named with the key it may mean (`jaxood.config_keys`).
So do a missing or empty `--config` or `--workdir`, a flag the command does not
have or one given a value it does not take, a `--workdir` that names a file (or
lies under one, or in a folder jaxood may not write), one in a run's checkpoints
folder and a `--workdir` URL: jaxood writes its workdir with the local file
system (orbax included), which would turn `gs://b/run` into a local folder
`gs:/b/run` on each host; multi-host runs need a folder that every host mounts
at the same path.
"""

import functools
import json
import logging
import os
import re
import sys
import traceback

from absl import app, flags
from ml_collections import config_flags

from jaxood import settings
from jaxood.cache import can_hold_a_folder
from jaxood.config_keys import (
    config_argument,
    config_of,
    defines_get_config,
    flag_values,
    key_of_another_config,
    keys_meant,
    keys_near,
    override_problem,
)
from jaxood.errors import agreeing, exit_with, joined, nearest_choice, report_user_errors
from jaxood.methods import planned_method_note
from jaxood.run_folders import is_run_settings, run_holding


def _exit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)


try:
    CONFIG = config_flags.DEFINE_config_file(
        "config",
        None,
        "A config file, and after a colon its variant: configs/sot_glp.py:demo. Its keys (docs/config.md says what "
        "each does) are changed with --config.<key>=value, as --config.seed=1. Required.",
        lock_config=True,
    )
except (flags.CantOpenFlagFileError, flags.IllegalFlagValueError) as err:
    # ml_collections reads the command's flag files as it defines the flag: one that is not there, or a bare --flagfile
    if os.environ.get("JAXOOD_TRACEBACK"):
        raise
    message = str(err).removeprefix("ERROR:: ")
    if isinstance(err, flags.IllegalFlagValueError):  # absl's "--flagfile with no argument"
        message = "--flagfile has no value: give the flag file's path, as --flagfile=FILE"
    _exit(f"error: {message}\n(JAXOOD_TRACEBACK=1 shows where it was raised)")
WORKDIR = flags.DEFINE_string("workdir", None, "The run's folder: its checkpoints, logs and report. Required.")


def typed_keys() -> tuple[str, ...]:
    """The config keys set on the command line or in a --flagfile (`--config.<key>=...`), dotted, once parsed."""
    return tuple(config_flags.get_override_values(flags.FLAGS["config"]))


# The flags every command needs, and what each is.
_REQUIRED = {"config": "the config file (after a colon its variant)", "workdir": "the run's folder"}


def _missing_flags(usage: str) -> str | None:
    """`--config` or `--workdir` not given, named with what each is and the command's usual line (`usage`), where
    absl said "FATAL Flags parsing error: flag --config=None: Flag --config must have a value other than None"."""
    missing = [name for name in _REQUIRED if flags.FLAGS[name].value is None]
    if not missing:
        return None
    flags_missing = joined(f"--{name}" for name in missing) + (" are" if len(missing) > 1 else " is")
    return f"{flags_missing} missing: give {joined(_REQUIRED[name] for name in missing)}, as in {usage}"


def _unset(name: str, state: str, usage: str) -> str:
    """A flag every command needs given empty or with no value (`state`), as a shell variable that is not set gives."""
    return f"--{name} {state} (a shell variable that is not set?): give {_REQUIRED[name]}, as in {usage}"


def _value_problem(err: Exception, usage: str) -> str | None:
    """A flag given no value, as `--workdir $RUN` with RUN not set (absl's "Missing value for flag --workdir"), a
    yes-or-no flag given another word (`--install=maybe`: absl's "flag --install=maybe: ('Non-boolean argument to
    boolean flag', 'maybe')"), or its `--noX` form given one (`--noinstall=x`: a ValueError's traceback)."""
    if found := re.fullmatch(r"Missing value for flag --?(\S+)", str(err)):  # --workdir or -workdir
        name = found[1]
        if name in _REQUIRED:
            return _unset(name, "has no value", usage)
        return f"--{name} has no value: give it one, as --{name}=VALUE"
    if found := re.match(r"flag --(\w+)=(.*): \('Non-boolean argument to boolean flag'", str(err)):
        name, given = found[1], found[2]
        return f"--{name}={given}: --{name} is yes or no: give --{name} or --no{name} (or =true, =false), not {given!r}"
    if found := re.fullmatch(r"--no(\S+?)=.* does not take an argument", str(err)):  # absl's ValueError
        name = found[1]
        return f"{str(err).split(' ')[0]}: --no{name} takes no value: give --no{name} alone, or --{name}=false"
    return None


def _workdir_problem(workdir: str) -> str | None:
    """What is wrong with `--workdir`, found before any work: empty (it failed in os.makedirs('') with a traceback),
    a URL, a path jaxood cannot make a folder at (jaxood.evaluate found out only when writing its report, after the
    whole evaluation), or a run's checkpoints folder (`_in_a_run`)."""
    if workdir == "":
        return (
            "--workdir is empty (a shell variable that is not set, as in --workdir=$RUN?): give the folder for the "
            "run's checkpoints, logs and results."
        )
    if "://" in workdir:
        return (
            "--workdir must be a folder of the local file system, not a URL: jaxood writes it with the local file "
            "system (a gs:// path would become a local folder named 'gs:'). On a pod or cluster use a folder every "
            "host mounts at the same path (NFS, Filestore)."
        )
    if not can_hold_a_folder(workdir):
        return (
            "--workdir must be a folder jaxood can write, or a path where it can make one; this one (or the nearest "
            "part of it that exists) is a file or a folder it may not write."
        )
    return _in_a_run(workdir)


def _in_a_run(workdir: str) -> str | None:
    """A `--workdir` in a run's checkpoints folder (`run_holding`) is refused naming the run's workdir: given to go
    on with the run, it started a new one there from step 0 (on ImageNet, hours before anyone noticed), its files
    mixed with the run's checkpoints."""
    if run := run_holding(workdir):
        return (
            f"--workdir {workdir} is in the checkpoints of the run in {run}: give --workdir={run} to go on with "
            "that run (the same command resumes it, or reports it again where it ended); a new run or report "
            "needs a folder outside that run's checkpoints"
        )
    return None


# What a Ctrl-C kept of training, evaluation or pretraining, where no handler saved first (`report_user_errors`).
RUN_KEPT = (
    "Files written before it are kept: a training run resumes from its last checkpoint when the same command runs "
    "again."
)


def run(main, usage: str) -> None:
    """`absl.app.run(main)`, with jaxood's own errors (`jaxood.errors.UserError`) and what is wrong in the command
    line (`_parse_flags`) printed as their message alone; `usage` is the command's usual line, named where a flag it
    needs is missing."""
    for name in ("config", "workdir"):  # `--help` lists the main module's flags, and these are jaxood.cli's
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    parse = functools.partial(_parse_flags, usage=usage)
    try:
        app.run(lambda argv: exit_with(report_user_errors(main, RUN_KEPT)(argv)), flags_parser=parse)
    except SystemExit as exit_:
        # absl exits with status 1 once it has printed the help asked for, where jaxood's other commands (argparse's)
        # exit with 0: `python -m jaxood.train --help && ...` stopped there
        if exit_.code == 1 and _asks_for_help(sys.argv):
            raise SystemExit(0) from None
        raise


HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")  # absl's, each of which prints help and exits


def _asks_for_help(argv: list[str]) -> bool:
    """Whether `argv` gives one of absl's help flags (`--help`, `-?`, `--helpfull=true`, on the command line or in a
    `--flagfile`; not `--help=false`, nor a flag after `--`, which ends them)."""
    try:
        argv = _flag_files_read(argv)
    except flags.Error:  # a flag file that cannot be read: absl said so, and printed no help
        return False
    flags_given = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    for arg in flags_given:
        name, equals, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name in HELP_FLAGS and (not equals or _true(value)):
            return True
    return False


def _true(value: str) -> bool:
    """Whether absl reads a boolean flag's `value` as true (False also for one it refuses, as `maybe`)."""
    try:
        return flags.BooleanParser().parse(value)
    except ValueError:
        return False


def _flag_files_read(argv: list[str]) -> list[str]:
    """`argv` with each `--flagfile`'s lines in its place, as absl reads them (`flags.Error`: one cannot be read)."""
    return [argv[0], *flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)]


def _parse_flags(argv: list[str], usage: str) -> list[str]:
    """absl's flag parsing, with what is wrong in the config said in one line as jaxood's own errors are: an override
    of a key the config does not have (before: a 40-line traceback of ml_collections' internals), a config file that
    is not there (the same, at the config's first use), a config whose `get_config` refuses its argument (absl's
    message held that function's traceback), one that does not load (`_unloadable_config`, `_no_config_returned`) or
    has an empty variant (`_empty_variant`), `--config.variant=...` (`_variant_override`), a flag the command does
    not have (`_unknown_flag`: an override with no config, a config key given as a flag, any other) and one given no
    value or a value it does not take (`_value_problem`), on the command line or in a `--flagfile`. Other flag errors
    keep absl's report; JAXOOD_TRACEBACK=1 keeps it for all. The command line's own problems
    (`_command_line_problem`: a missing flag, the workdir, an argument that is no flag) are refused either way."""
    typed = argv  # its flag files' lines not in place
    if os.environ.get("JAXOOD_TRACEBACK"):
        rest = app.parse_flags_with_usage(argv)
        if problem := _no_config_returned(argv, False) or _command_line_problem(rest, usage, typed):
            _exit(f"error: {problem}")
        return rest
    rest, returned_none = [], _ConfigReturnedNone()
    logging.getLogger("absl").addFilter(returned_none)
    try:
        argv = _flag_files_read(argv)
        problem = _json_config_file(argv)  # before ml_collections runs it as Python
        if problem is None:
            rest = flags.FLAGS(argv)
            problem = (
                _missing_config_file(argv, usage)
                or _empty_variant(argv)
                or _no_config_returned(argv, returned_none.seen)
                or _variant_override(argv)
                or _command_line_problem(rest, usage, typed)
            )
    except Exception as err:  # noqa: BLE001 -- a config file's own code raises anything; what no check names is raised
        problem = (
            _missing_config_file(argv, usage)
            or _unloadable_config(err, argv)
            or _refused_config(err)
            or _no_config_returned(argv, returned_none.seen)
            or override_problem(argv)
            or _unknown_flag(err, argv, usage, typed)
            or _value_problem(err, usage)
        )
        if problem is None and not isinstance(err, flags.Error):
            raise
        if problem is None:  # absl's own report, as `app.parse_flags_with_usage` words it
            _exit(f"FATAL Flags parsing error: {err}\nPass --helpshort or --helpfull to see help on flags.")
    finally:
        logging.getLogger("absl").removeFilter(returned_none)
    if problem:
        _exit(f"error: {problem}\n(JAXOOD_TRACEBACK=1 shows where it was raised)")
    return rest


def _unknown_flag(err: Exception, argv: list[str], usage: str, typed: list[str]) -> str | None:
    """A flag absl does not know ("Unknown command line flag 'seed'"): an override with no `--config`
    (`--config.seed=1` alone) is the missing `--config` (`_missing_flags`); a config key given as a flag of its own
    (`--seed=3`, `--lr=0.1`, `--sot_glp.topk=3`, `--noplots`) is named with the override it may mean
    (`--config.seed=3`, `--config.optim.lr=0.1`, `--config.sot_glp.top_k=3`, `--config.plots=false`); any other is
    named with the command's flags and absl's nearest (`--workir`: `--workdir`), where absl said "FATAL Flags parsing
    error" with no word of `--config.<key>`."""
    if not isinstance(err, flags.UnrecognizedFlagError):
        return None
    name = err.flagname
    if name.startswith("config.") and config_argument(argv) is None:  # a `config=FILE` without dashes named first
        left = flags.FLAGS(argv, known_only=True)  # absl's leftovers: the unknown flags, and the arguments no flag took
        return _stray_arguments([left[0], *(arg for arg in left[1:] if arg[:1] != "-")], typed) or _missing_flags(usage)
    if len(spaced := name.split(None, 1)) == 2:  # a --flagfile's line `--config configs/sot_glp.py` is one argument
        return (
            f"--{name}: a flag's value follows an = in a --flagfile's line (or a quoted argument), as "
            f"--{spaced[0]}={spaced[1]}"
        )
    given = next((arg for arg in argv[1:] if re.match(rf"--?{re.escape(name)}(=|$)", arg)), f"--{name}")
    near_flags = re.search(r"Did you mean: (.+) \?", str(err))  # absl's, of the command's flags and its own
    own = sorted(flag.name for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0]))
    # A key near it comes before absl's own flags near it (`--shot`: shots, not absl's --showprefixforinfo)
    near_own = near_flags is not None and bool(set(near_flags[1].split(", ")) & set(own))
    config = config_of(argv)
    in_config = config is not None and name.split(".")[0] in config
    if config is not None and not in_config and (other := key_of_another_config(argv, name)):
        return f"{given}: {other} (a config's keys are set as --config.<key>=value)"
    if config is not None and (in_config or not near_own):
        negated = keys_near(config, name[2:], []) if name.startswith("no") and not in_config else []  # absl's --noX
        meant = [f"{key}=false" for key in negated if isinstance(settings.at(config, key), bool)]
        value = "".join(given.partition("=")[1:])
        meant = meant or [f"{key}{value}" for key in keys_meant(config, name)]
        if meant:
            return (
                f"{given}: the config's keys are set as --config.<key>=value (did you mean "
                f"{' or '.join(f'--config.{m}' for m in meant)}?)"
            )
    hint = f" (did you mean {' or '.join(f'--{f}' for f in near_flags[1].split(', '))}?)" if near_flags else ""
    command = usage.split()[2]  # python -m jaxood.train ...
    return (
        f"{given}: {command} has no flag --{name}{hint}; its flags are "
        f"{joined(f'--{flag}' for flag in own)} (--helpshort says what each takes), and the config's keys are set "
        "as --config.<key>=value"
    )


def _command_line_problem(rest: list[str], usage: str, typed: list[str]) -> str | None:
    """An argument that is no flag (`_stray_arguments`: first, as `config=...` for a `--config` then missing), a flag
    the command needs not given (`_missing_flags`) or a `--workdir` it cannot use (`_workdir_problem`): jaxood's
    checks of a command line absl parsed (`typed`: as typed, its flag files' lines not in place)."""
    return _stray_arguments(rest, typed) or _missing_flags(usage) or _workdir_problem(flags.FLAGS.workdir)


# Dashes a document or a chat turns `--` into (en dash, em dash, ...): a flag pasted from one is read as an argument.
TYPOGRAPHIC_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"


def _stray_arguments(rest: list[str], typed: list[str]) -> str | None:
    """absl hands the arguments that are no flags to the command, and jaxood's commands take none: a setting
    without its dashes (`config.epochs=3`), with a pasted typographic dash (`\u2014config.epochs=3`) or after a bare
    `--` (absl reads no flag after it) was passed over, and the run went on with the config's value; `--install
    false` installed. Each one's form gives its hint. Those not in the command line as `typed` are said to be flag
    files' lines."""
    if not (stray := rest[1:]):
        return None
    files = [f"--flagfile={path}" for path in flag_values(typed, "flagfile")]
    from_files = [arg for arg in stray if files and arg not in typed[1:]]
    on_the_line = [arg for arg in stray if arg not in from_files]
    stray = on_the_line + from_files  # the typed ones first, in the list and the hints alike
    listed = " ".join(map(repr, on_the_line))
    if from_files:
        listed += f"{', and ' if listed else ''}{' '.join(map(repr, from_files))} (from {joined(files, 'or')})"
    meant = [f"--{arg}" for arg in stray if re.match(r"(config|workdir|flagfile)\b", arg)]
    pasted = [repr(arg) for arg in stray if arg[:1] in TYPOGRAPHIC_DASHES]
    hints = [f" (did you mean {' or '.join(meant)}?)"] if meant else []
    if any(re.match(r"--?\w", arg) for arg in stray):  # absl would have refused it as a flag: it came after a bare --
        hints.append("; absl reads no flag after a bare --: remove the --")
    if pasted:
        hints.append(
            f"; {' '.join(pasted)} {agreeing(len(pasted), 'begins', 'begin')} with a typographic dash, as text "
            f"pasted from a document has: type {agreeing(len(pasted), 'it', 'each')} as --"
        )
    if any(arg.lower() in ("true", "false") for arg in stray):  # pretrain's `--install false` installed
        hints.append("; a yes-or-no flag takes its value after =, as --install=false, or none: --install, --noinstall")
    return (
        f"unexpected argument(s) {listed}: jaxood's commands take flags only (--config=FILE[:variant], "
        f"--config.<key>=value, --workdir=DIR), and would have run without {agreeing(len(stray), 'it', 'them')}"
        + "".join(hints)
    )


def _missing_config_file(argv: list[str], usage: str) -> str | None:
    """ml_collections keeps a missing config file's error until the config is first used. Where the file's folder
    holds config files, the nearest is named, or those there: "run from" the checkout was said in it. An empty
    `--config=` is named with the command's usual line (`usage`)."""
    if (given := config_argument(argv)) is None or os.path.isfile(path := given.split(":", 1)[0]):
        return None
    if not given:
        return _unset("config", "is empty", usage)
    missing = f"--config={given}: there is no config file {path}"
    if planned := planned_method_note(os.path.splitext(os.path.basename(path))[0]):  # configs/dot_ood.py
        missing += f" ({planned})"
    if configs := _config_files(folder := os.path.dirname(path)):
        if near := nearest_choice(os.path.basename(path), configs, cutoff=0.75):
            return f"{missing} (did you mean --config={given.replace(path, os.path.join(folder, near), 1)}?)"
        return f"{missing}; {_holding(folder, configs)}"
    return (
        f"{missing} (from the current folder {os.getcwd()}); the configs ship in the jaxood checkout's configs/: run "
        "from there, or give the file's path"
    )


def _holding(folder: str, configs: list[str]) -> str:
    """The config files `folder` holds (`_config_files`), said as the refusals of a config file name them."""
    return f"{folder or 'the current folder'} holds the config files {joined(configs)}"


def _config_files(folder: str) -> list[str]:
    """The Python files in `folder` (the current one for "") that define `get_config`, as ml_collections loads."""
    try:
        names = sorted(name for name in os.listdir(folder or ".") if name.endswith(".py"))
    except OSError:
        return []
    return [name for name in names if defines_get_config(os.path.join(folder, name))]


def _json_config_file(argv: list[str]) -> str | None:
    """A JSON file given as the config file, as a run's saved config.json or its results.json (to run its settings
    again): ml_collections ran it as Python, and it failed with a NameError's traceback at its first `true`."""
    given = config_argument(argv) or ""
    path = given.split(":", 1)[0]
    if path.endswith(".py") or not os.path.isfile(path) or os.path.getsize(path) > 2**24:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError):  # not JSON: ml_collections runs it, as Python
        return None
    settings = settings.get("config", settings) if isinstance(settings, dict) else {}  # results.json holds its config
    made = (
        f", the settings of a run (method {settings['method']!r}, variant {settings.get('variant')!r}): give the "
        "config file and variant they were made with, and each setting to change as --config.<key>=value"
        if is_run_settings(settings)
        else ""
    )
    return (
        f"--config={given}: a config file is Python, with its variant after a colon (configs/sot_glp.py:demo); {path} "
        f"is JSON{made}"
    )


def _unloadable_config(err: Exception, argv: list[str]) -> str | None:
    """A config file that ml_collections could not load, each a traceback before: a file that is not Python (a
    README given by mistake: its SyntaxError), Python without `get_config` (`configs/common.py`: an AttributeError),
    or one whose own code failed as it loaded (a NameError or ImportError), named with its line."""
    given = config_argument(argv) or ""
    path = given.split(":", 1)[0]
    if isinstance(err, SyntaxError):
        where = f"line {err.lineno}: " if err.lineno else ""
        return (
            f"--config={given}: a config file is Python, with its variant after a colon (configs/sot_glp.py:demo); "
            f"{path} does not read as Python ({where}{err.msg})"
        )
    if isinstance(err, AttributeError) and str(err).endswith("has no attribute 'get_config'"):
        configs = _config_files(folder := os.path.dirname(path))
        there = f"; {_holding(folder, configs)}" if configs else ""
        return f"--config={given}: a config file defines get_config(variant), which {path} does not{there}"
    here = os.path.abspath(path)
    frames = [frame for frame in traceback.extract_tb(err.__traceback__) if os.path.abspath(frame.filename) == here]
    if not frames or isinstance(err, flags.Error):  # flags.Error: get_config's own refusal (`_refused_config`)
        return None
    line = frames[-1]
    return f"--config={given}: {path} failed at line {line.lineno} ({line.line}): {type(err).__name__}: {err}"


def _empty_variant(argv: list[str]) -> str | None:
    """`--config=FILE:` with nothing after the colon (`FILE:$VARIANT`, VARIANT not set) ran the file's default
    variant (the paper's, on ImageNet, where the demo was meant)."""
    if not (given := config_argument(argv) or "").endswith(":"):
        return None
    return (
        f"--config={given}: the variant after the colon is empty (a shell variable that is not set?): name one, or "
        f"give {given[:-1]} alone for its default"
    )


class _ConfigReturnedNone(logging.Filter):
    """ml_collections' warning that a config file's `get_config` returned None, kept from stderr (`_no_config_returned`
    says so, with the fix, in jaxood's one line) and noted in `seen`."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        said = record.module == "config_flags" and "returned None" in str(record.msg)
        self.seen |= said
        return not said


def _no_config_returned(argv: list[str], seen: bool) -> str | None:
    """A config file whose `get_config` returned None (no `return`), which was said to be a missing `--config`, and
    with an override a KeyError's traceback of ml_collections' internals (`seen`: ml_collections warned of it; the
    flag's value None where it did not)."""
    config = flags.FLAGS["config"]
    if (given := config_argument(argv)) is None or not (seen or config.present and config.value is None):
        return None
    return f"--config={given}: its get_config returned None (a missing return?): it returns the config, a ConfigDict"


def _variant_override(argv: list[str]) -> str | None:
    """`--config.variant=...` changed only the record of the variant (a results.json that said `noproj` of a run
    trained as `paper`): the variant's settings come from the config file's argument."""
    if not any(re.match(r"--config\.variant(=|$)", arg) for arg in argv[1:]):
        return None
    path = (config_argument(argv) or "configs/<file>.py").split(":", 1)[0]
    return (
        f"--config.variant: the variant is chosen by the config file's argument, as in --config={path}:<variant>, "
        "which sets its values; config.variant only records which one it was"
    )


def _refused_config(err: Exception) -> str | None:
    """The config file's `get_config` raised a ValueError (an unknown variant): its message, without the traceback
    ml_collections put in it."""
    found = re.match(r"flag (--config=\S*): Error whilst parsing config file:", str(err))
    return found and f"{found[1]}: {str(err).strip().splitlines()[-1].strip().removeprefix('ValueError: ')}"
