"""The keys of the config a command line gives (`--config=FILE[:variant]` and its `--config.<key>=value`
overrides), read on the way to an error (`jaxood.cli`): an override of a key the config lacks named with the key it
may mean, or with the files of jaxood's other configs that have it; one that gives a group of keys or a value a form
it does not take, named with the form.
"""

import ast
import importlib.machinery
import importlib.util
import os
import re
from collections.abc import Iterator

import ml_collections
from absl import flags

from jaxood.data.datasets import ENTRY_KEYS, EXAMPLE_ENTRY
from jaxood.errors import joined, nearest_choice
from jaxood.methods import command_for

# jaxood's config files: a key one of them has, given to another, is named with them and the commands that take them.
SHIPPED_CONFIGS = ("sot_glp.py", "zeroshot.py", "toy_clip.py")


def config_argument(argv: list[str]) -> str | None:
    """The `--config` value on the command line (`configs/sot_glp.py:demo`), the last one given; None without one."""
    return (flag_values(argv, "config") or [None])[-1]


def flag_values(argv: list[str], name: str) -> list[str | None]:
    """The values `argv` gives the flag `name`, in order, as `--name=value` or `--name value` (None: given last, with
    no value after it)."""
    values = []
    for i, arg in enumerate(argv[1:], 1):
        if found := re.match(rf"--?{re.escape(name)}(=|$)", arg):
            values.append(arg[found.end() :] if found[1] else (argv[i + 1] if i + 1 < len(argv) else None))
    return values


def config_of(argv: list[str]) -> ml_collections.ConfigDict | None:
    """The config `argv`'s `--config` names, loaded again as ml_collections loads it (its own loader is private, and a
    failed parse kept nothing); None where there is none or it does not load."""
    path, colon, variant = (config_argument(argv) or "").partition(":")
    return _loaded(path, *([variant] if colon else []))


def _loaded(path: str, *variant: str) -> ml_collections.ConfigDict | None:
    """The config file `path`'s `get_config(*variant)`; None where there is none or it does not load."""
    try:
        spec = importlib.util.spec_from_file_location("jaxood_config_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(*variant)
    except Exception:  # noqa: BLE001 -- no config file, or one that fails: its own report says so
        return None


def defines_get_config(path: str) -> bool:
    """Whether the file `path` defines `get_config` as a config file ml_collections loads does, in the module itself
    (a `def`, under an `if` or `try` too, an assignment or an import, `from module import *` where that module's file
    does); parsed, not run."""
    module = _parsed(path)
    return module is not None and _binds_get_config(module, {os.path.realpath(path)})


def _parsed(path: str) -> ast.Module | None:
    """The Python file `path`, parsed; None where it cannot be read or is not Python."""
    try:
        with open(path, encoding="utf-8") as f:
            return ast.parse(f.read(), path)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):  # ValueError: a null byte, on Python 3.11
        return None


def _binds_get_config(module: ast.Module, seen: set[str]) -> bool:
    """Whether `module` binds `get_config`: itself, or through a `from <module> import *` of a file (found as Python
    imports it, from sys.path, and not run) whose `__all__`, where it gives one, names it; `seen`: the files read,
    which a cycle of such imports would read again."""
    if "get_config" in _module_names(module):
        return True
    for node in ast.walk(module):  # Python allows `import *` in a module's own statements alone
        if not (isinstance(node, ast.ImportFrom) and not node.level and node.names[0].name == "*"):
            continue
        origin = _module_file(node.module)
        if origin is None or (origin := os.path.realpath(origin)) in seen or (other := _parsed(origin)) is None:
            continue
        seen.add(origin)
        if _star_takes(other, "get_config") and _binds_get_config(other, seen):
            return True
    return False


def _module_file(name: str) -> str | None:
    """The source file Python's import of module `name` finds on sys.path, found without importing it or its
    packages; None where there is none, or it is not a `.py` file (a compiled or built-in module)."""
    parts, where, spec = name.split("."), None, None
    for depth in range(1, len(parts) + 1):
        if depth > 1 and where is None:  # `name`'s parent is a module, not a package
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), where)
        if spec is None:
            return None
        where = spec.submodule_search_locations
    return spec.origin if spec.origin and spec.origin.endswith(".py") else None


def _star_takes(module: ast.Module, name: str) -> bool:
    """Whether `from module import *` takes `name` where `module` binds it: its `__all__` names it, where that is
    written out (one built by code is not read, and counts as naming it), else a name not starting with `_` is taken."""
    for node in module.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            try:
                return name in ast.literal_eval(node.value)
            except (ValueError, TypeError):
                return True
    return not name.startswith("_")


def _module_names(node: ast.AST, in_comprehension: bool = False) -> Iterator[str]:
    """The names `node`'s statements bind in its module: not those bound inside a function or class body, nor a
    comprehension's own (`[x for x in ...]` binds no `x` in the module; `(y := ...)` in it binds `y` there)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield child.name
        elif isinstance(child, ast.NamedExpr):
            yield child.target.id
            yield from _module_names(child.value, in_comprehension)
        elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
            if not in_comprehension:
                yield child.id
        elif isinstance(child, ast.alias):
            yield (child.asname or child.name).partition(".")[0]
        elif not isinstance(child, ast.Lambda):
            yield from _module_names(child, in_comprehension or isinstance(child, _COMPREHENSIONS))


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def override_problem(argv: list[str]) -> str | None:
    """The first `--config.<key>=...` of `argv` whose key the config does not have, named with the nearest one, or
    that gives a group of keys (a dataset entry) something other than a dict (`--config.id_dataset=/data/x`: before,
    ml_collections' parse error of the path, with no word of the form it wants)."""
    if (config := config_of(argv)) is None:  # a config that does not load keeps the library's own report
        return None
    for arg in argv[1:]:
        if not (found := re.match(r"--config\.([^=]+)", arg)):
            continue
        after = arg[found.end() :]  # "=value", or "" for a bare --config.<key>
        given, parts = after.removeprefix("="), found[1].split(".")
        value = _literal(given) if after else _LeftOut()
        node, depth = _deepest(config, parts)
        path = parts[:depth]
        if depth < len(parts):
            if not isinstance(node, ml_collections.ConfigDict):
                return f"{found[0]}: {'.'.join(path)} is a value ({type(node).__name__}), not a group of keys"
            part = parts[depth]  # the first part the config lacks
            near = keys_near(node, part, path)
            hint = f" (did you mean {' or '.join(near)}?)" if near else ""
            if part in ENTRY_KEYS.get(node.get("kind"), ()):  # a key the entry may have, as class_names on TFDS
                # kind first, then the entry's keys (to_dict sorts them, kind among them) and the one given
                entry = repr({"kind": node.kind, **node.to_dict(), part: value})
                hint = f"; a key this {node.kind!r} entry may have is given with the whole entry, as in " + (
                    f'--config.{".".join(path)}="{entry}"'
                )
            elif "kind" in node:  # a dataset entry (jaxood.data.datasets): another kind brings its own keys
                hint += f"; a dataset of another kind is given whole, as in {_whole_entry('.'.join(path))}"
            elif elsewhere := key_of_another_config(argv, found[1]):  # not an entry's: those are their kinds'
                return f"{found[0]}: {elsewhere}"
            elif not near:
                hint = _keys_listed(node, path, parts[depth:], value)
            return f"{found[0]}: the config has no key {'.'.join([*path, part])}{hint}"
        if isinstance(node, ml_collections.ConfigDict) and after and not isinstance(value, dict):
            key = ".".join(path)
            example = f"as in {_whole_entry(key)}" if "kind" in node else f"its keys now: {', '.join(node.keys())}"
            return (
                f"--config.{key}={given}: config.{key} is a group of keys, given whole as a Python dict ({example}) "
                f"or key by key (--config.{key}.<key>=...)"
            )
        if after and (kind := _VALUE_KINDS.get(type(node))):
            words, parser = kind
            try:
                parser.parse(given)
            except ValueError:
                key = ".".join(path)
                return f"--config.{key}={given}: {key} is {words} (the config's is {node!r}), not {given!r}"
    return None


def _keys_listed(node: ml_collections.ConfigDict, path: list[str], rest: list[str], value: object) -> str:
    """Where no key is near the one given (not in a dataset entry, whose keys are its kind's: `override_problem`): a
    group's keys (`sot_glp`'s 16), the dict an empty group is given whole as (`--config.optim.groups.prompts.lr=0.1`:
    `--config.optim.groups="{'prompts': {'lr': 0.1}}"`), or for the config's own keys (17 to 40 of them) the page
    that lists them. `value` is the one given, read as ml_collections reads it."""
    key = ".".join(path)
    if path and not node.keys():
        whole = value
        for part in reversed(rest):
            whole = {part: whole}
        return f'; {key} is empty, and is given whole, as in --config.{key}="{whole!r}"'
    if path:
        return f" ({key}'s keys: {', '.join(node.keys())})"
    return " (docs/config.md lists every key, and what it does)"


# What a key of each type takes, and the parser ml_collections reads its flag with: a value it could not read
# (`--config.seed=1.5`) was absl's "FATAL Flags parsing error ... invalid literal for int() with base 10".
_VALUE_KINDS = {
    bool: ("true or false", flags.BooleanParser()),
    int: ("a whole number", flags.IntegerParser()),
    float: ("a number", flags.FloatParser()),
}


def key_of_another_config(argv: list[str], key: str) -> str | None:
    """A key the config lacks that another of jaxood's config files has (the file of that name beside it, where it
    defines get_config: a script of that name is not run), or its own file's default variant where a variant was
    given: `--config.epochs` given to configs/zeroshot.py (copied from a training command), `--config.ood_root` to
    configs/sot_glp.py:demo, named with those files and their commands. A key near it in the config was named
    (`shots`: `plots`; `seed`: `csp.seed`; `ood_root`: `ood_groups`)."""
    given = config_argument(argv) or ""
    path, colon, _ = given.partition(":")
    parts, holders = key.split("."), []
    for name in SHIPPED_CONFIGS:
        same = name == os.path.basename(path)
        if same and not colon:  # the config given
            continue
        file = os.path.join(os.path.dirname(path), name)
        other = _loaded(file) if defines_get_config(file) else None  # a script of that name is not run
        if other is not None and _deepest(other, parts)[1] == len(parts):
            holders.append(f"{path}'s default variant" if same else f"{file} ({command_for(other.get('method'))})")
    return f"{key} is a key of {joined(holders)}, not of {given}, the config given" if holders else None


def keys_meant(config: ml_collections.ConfigDict, name: str) -> list[str]:
    """The config keys a dotted `name` may mean: itself where its groups are the config's (the part past a value is
    the override's own refusal), else the keys near its first part the config lacks (`sot_glp.topk`:
    `sot_glp.top_k`, `topk`: `sot_glp.top_k`), the rest kept."""
    parts = name.split(".")
    node, depth = _deepest(config, parts)
    if depth == len(parts) or not isinstance(node, ml_collections.ConfigDict):
        return [name]
    return [".".join([key, *parts[depth + 1 :]]) for key in keys_near(node, parts[depth], parts[:depth])]


def _deepest(config: ml_collections.ConfigDict, parts: list[str]) -> tuple[object, int]:
    """The node a dotted key's `parts` reach in `config`, and how many of them led there: all, or those before the
    first the config lacks or the first past a value (`sot_glp.top_k.x`: top_k's value, 2)."""
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return node, depth
        node = node[part]
    return node, len(parts)


def keys_near(node: ml_collections.ConfigDict, name: str, path: list[str]) -> list[str]:
    """The keys a mistyped key `name` under `node` (itself at `path`) may mean: its nearest key there, and the keys of
    that name in the groups below (`_keys_named`); where there is none, the groups' keys near it."""
    near = [".".join([*path, key]) for key in [nearest_choice(name, list(node.keys()))] if key is not None]
    near += _keys_named(node, name, path)
    return near or _keys_named(node, name, path, _near)


def _named(name: str, keys: list[str]) -> str | None:
    """A group's key called `name` (`_keys_named`)."""
    return name if name in keys else None


def _keys_named(node: ml_collections.ConfigDict, name: str, path: list[str], match=_named) -> list[str]:
    """The dotted paths of the keys called `name` in the groups below `node` (itself at `path`), named after the key
    of `node` nearest `name`: a method's or the optimiser's key given at the top (`--config.n_local` for
    `sot_glp.n_local`, `--config.lr` for `optim.lr`) got no hint, its name being no misspelling of a top-level key.
    `match` (`_near`) takes each group's key near `name` instead, where no key of the config is named so or near it
    at the top (`--config.topk` for `sot_glp.top_k`, `--config.LR` for `optim.lr`)."""
    found = []
    for key, value in node.items():
        if isinstance(value, ml_collections.ConfigDict):
            hit = match(name, list(value.keys()))
            found += [".".join([*path, key, hit])] if hit is not None else []
            found += _keys_named(value, name, [*path, key], match)
    return found


def _near(name: str, keys: list[str]):
    """A group's key near a key name given at the top (`_keys_named`): closer than a top-level hint must be (0.8 alike,
    where difflib's default is 0.6), as every group is searched: at 0.6, `steps` named four `eps` keys."""
    return nearest_choice(name, keys, cutoff=0.8)


class _LeftOut:
    """The value of a key given bare (`--config.ood_groups.near`), shown as VALUE in the whole form it is given in,
    where its empty string was shown (`--config.ood_groups="{'near': ''}"`)."""

    def __repr__(self) -> str:
        return "VALUE"


def _whole_entry(key: str) -> str:
    """A dataset entry given whole on the command line."""
    return f"--config.{key}=\"{EXAMPLE_ENTRY}\" (README, 'Datasets')"


def _literal(text: str):
    """The Python literal `text` spells, as ml_collections reads a flag's value; `text` itself (a string) if it spells
    none."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
