"""Every option in a script's --help does something in that script, and an option name means one
thing in every script.

A script's options are the fields of the dataclasses it gives `HfArgumentParser` (TrainingArguments'
own options aside). An option does something when its value is read: an attribute access `.name`
(or `getattr(x, "name")`) on an argument object of that script, in the script or in the package code
it hands the object to. The objects are followed from the script's functions (parameters annotated
with its argument classes, names bound from parsing) through calls into the package, aliases,
`dataclasses.replace` copies, attributes of `self` they are stored in, and the methods and properties
of the argument classes that code uses (`__post_init__` only checks and defaults values, so a field
read there alone does nothing).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from transformers import HfArgumentParser, TrainingArguments

from conftest import REPO

SCRIPTS = sorted(path.stem for path in REPO.glob("run_*.py"))
PACKAGE_FILES = sorted((REPO / "armhubert_training").rglob("*.py"))


class _Parsed(Exception):
    def __init__(self, parser: HfArgumentParser):
        self.parser = parser


def parser_of(script: str) -> HfArgumentParser:
    """The parser that `script.main()` builds, caught when it starts parsing."""
    module = importlib.import_module(script)
    original = HfArgumentParser.parse_args_into_dataclasses

    def catch(self, *args, **kwargs):
        raise _Parsed(self)

    HfArgumentParser.parse_args_into_dataclasses = catch
    try:
        module.main([])
    except _Parsed as parsed:
        return parsed.parser
    finally:
        HfArgumentParser.parse_args_into_dataclasses = original
    raise AssertionError(f"{script}.main([]) never parsed its command line")


PARSERS = {script: parser_of(script) for script in SCRIPTS}


def argument_classes(script: str) -> list[type]:
    """The script's dataclasses, TrainingArguments aside."""
    return [cls for cls in PARSERS[script].dataclass_types if not issubclass(cls, TrainingArguments)]


def options(script: str) -> dict[str, type]:
    """Each option of the script (outside TrainingArguments) -> the class whose declaration of its field
    is in effect (a subclass that re-declares a field declares another option of the same name)."""
    result = {}
    for cls in argument_classes(script):
        for field in dataclasses.fields(cls):
            if field.init:
                result[field.name] = next(klass for klass in cls.__mro__
                                          if field.name in inspect.get_annotations(klass))
    return result


# ----------------------------------------------------------------------------------------------
# Which fields of the argument objects are read
# ----------------------------------------------------------------------------------------------

# Functions whose result is the parsed argument objects.
PARSING = {"parse_config_and_args", "parse_args_into_dataclasses"}


def _mentions(annotation: ast.expr | None, class_names: set[str]) -> bool:
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _mentions(ast.parse(node.value, mode="eval").body, class_names):
                return True
        elif (isinstance(node, ast.Name) and node.id in class_names
              or isinstance(node, ast.Attribute) and node.attr in class_names):
            return True
    return False


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


class Code:
    """The functions and classes of some files, by name (names that several files define are merged)."""

    def __init__(self, paths: list[Path]):
        self.functions: dict[str, list[tuple[ast.FunctionDef, str | None]]] = defaultdict(list)
        self.members: dict[str, dict[str, ast.FunctionDef]] = defaultdict(dict)
        self.dataclass_fields: dict[str, list[str]] = {}  # of the dataclasses without an __init__ of their own
        self.bases: dict[str, list[str]] = {}
        self.trees = {path: ast.parse(path.read_text()) for path in paths}
        for tree in self.trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    self.bases[node.name] = [ast.unparse(base).split(".")[-1] for base in node.bases]
                    if any("dataclass" in ast.unparse(decorator) for decorator in node.decorator_list):
                        self.dataclass_fields[node.name] = [member.target.id for member in node.body
                                                            if isinstance(member, ast.AnnAssign)
                                                            and isinstance(member.target, ast.Name)]
                    for member in node.body:
                        if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self.members[node.name][member.name] = member
                            self.functions[member.name].append((member, node.name))
        methods = {id(member) for by_name in self.members.values() for member in by_name.values()}
        for tree in self.trees.values():
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and id(node) not in methods:
                    self.functions[node.name].append((node, None))

    def callees(self, call: ast.Call) -> list[tuple[ast.FunctionDef, bool]]:
        """(function, whether its first parameter is bound: self or cls) for each function `call` may run."""
        name = _called_name(call)
        if name in self.bases:  # a class of these files built: its own or an inherited __init__
            init = self.method(name, "__init__")
            return [(init, True)] if init is not None else []
        is_method = isinstance(call.func, ast.Attribute)
        return [(function, owner is not None and is_method) for function, owner in self.functions.get(name, [])]

    def method(self, klass: str, name: str) -> ast.FunctionDef | None:
        """`klass`'s method `name`, its own or the nearest base's among these files."""
        if name in self.members.get(klass, {}):
            return self.members[klass][name]
        return next(filter(None, (self.method(base, name) for base in self.bases.get(klass, []))), None)


def fields_read(script: str, class_names: set[str]) -> set[str]:
    """The fields of the argument objects (instances of `class_names`) that the script reads, or the
    package code it hands them to: followed from the script's functions through calls, keyword
    arguments, aliases, `dataclasses.replace` copies and attributes of `self` they are stored in."""
    script_path = REPO / f"{script}.py"
    code = Code([script_path, *PACKAGE_FILES])
    script_functions = [node for node in ast.walk(code.trees[script_path])
                        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    returning = PARSING | {function.name for function in script_functions if _mentions(function.returns, class_names)}
    owner_of = {id(member): owner for owner, by_name in code.members.items() for member in by_name.values()}
    stored: dict[str, set[str]] = defaultdict(set)  # class -> attributes of self that hold argument objects
    read: set[str] = set()
    seen: set[tuple[int, frozenset[str], frozenset[str]]] = set()
    pending: list[tuple[ast.FunctionDef, frozenset[str]]] = []

    def store(owner: str, attributes: set[str]) -> None:
        """Attributes of `owner`'s instances now hold argument objects: its methods read them."""
        if attributes - stored[owner]:
            stored[owner].update(attributes)
            pending.extend((member, frozenset()) for member in code.members[owner].values())

    def holds(node: ast.expr, holders: set[str], owner: str | None) -> bool:
        if isinstance(node, ast.Name):
            return node.id in holders
        return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                and owner is not None and node.attr in stored[owner])

    def visit(function: ast.FunctionDef, holders: frozenset[str]) -> None:
        owner = owner_of.get(id(function))
        key = (id(function), holders, frozenset(stored[owner]) if owner else frozenset())
        if key in seen:
            return
        seen.add(key)
        names = set(holders)
        for node in ast.walk(function):  # aliases and copies first, in any order of the statements
            if isinstance(node, ast.Assign):
                value = node.value
                if (holds(value, names, owner) or isinstance(value, ast.Call) and (
                        _called_name(value) in returning
                        or _called_name(value) == "replace" and value.args and holds(value.args[0], names, owner))):
                    for target in node.targets:
                        names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                        if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                                and target.value.id == "self" and owner):
                            store(owner, {target.attr})
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and holds(node.value, names, owner):
                read.add(node.attr)
                for klass in class_names:  # a method or property of the argument class reads its fields
                    if node.attr in code.members.get(klass, {}):
                        pending.append((code.members[klass][node.attr], frozenset({"self"})))
            elif isinstance(node, ast.Call):
                if (_called_name(node) == "getattr" and len(node.args) >= 2 and holds(node.args[0], names, owner)
                        and isinstance(node.args[1], ast.Constant)):
                    read.add(node.args[1].value)
                built = owner if _called_name(node) == "cls" else _called_name(node)
                if built in code.dataclass_fields and code.method(built, "__init__") is None:
                    fields = code.dataclass_fields[built]
                    store(built, {field for field, value in zip(fields, node.args) if holds(value, names, owner)}
                          | {keyword.arg for keyword in node.keywords
                             if keyword.arg in fields and holds(keyword.value, names, owner)})
                for callee, bound in code.callees(node):
                    arguments = callee.args
                    positional = [*arguments.posonlyargs, *arguments.args][1 if bound else 0:]
                    keywords = {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
                    passed = {parameter.arg for parameter, value in zip(positional, node.args)
                              if holds(value, names, owner)}
                    passed |= {keyword.arg for keyword in node.keywords
                               if keyword.arg in keywords and holds(keyword.value, names, owner)}
                    if passed:
                        pending.append((callee, frozenset(passed)))

    for function in script_functions:
        arguments = function.args
        parameters = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
        pending.append((function, frozenset(p.arg for p in parameters if _mentions(p.annotation, class_names))))
    while pending:
        visit(*pending.pop())
    return read


def options_read(script: str) -> set[str]:
    class_names = {klass.__name__ for cls in argument_classes(script) for klass in cls.__mro__[:-1]}
    return fields_read(script, class_names)


READ = {script: options_read(script) for script in SCRIPTS}


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


# Each script run as `python run_x.py --help` would run it (`runpy`, as __main__), all in one fresh
# interpreter: one import of torch and Transformers instead of one per script. Prints
# {script: [exit status, help text, error output]} as JSON.
_HELP_RUNNER = """
import contextlib, io, json, runpy, sys, traceback
results = {}
for script in sys.argv[1:]:
    out, err, status = io.StringIO(), io.StringIO(), 0
    sys.argv = [script + ".py", "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script + ".py", run_name="__main__")
        except SystemExit as exit:
            status = exit.code or 0
        except BaseException:
            traceback.print_exc()
            status = 1
    results[script] = [status, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def help_runs() -> dict[str, list]:
    result = subprocess.run([sys.executable, "-c", _HELP_RUNNER, *SCRIPTS], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0_and_every_option_is_explained(script, help_runs):
    status, help_text, errors = help_runs[script]
    assert status == 0, errors
    assert all(f"--{name}" in help_text for name in options(script))
    unexplained = [action.option_strings for action in PARSERS[script]._actions if not (action.help or "").strip()]
    assert not unexplained


@pytest.mark.parametrize("script, name", [(script, name) for script in SCRIPTS for name in options(script)])
def test_every_option_does_something_in_its_script(script, name):
    assert name in READ[script], (f"{script}.py --help lists --{name}, but neither {script}.py nor the package "
                                  f"code it hands its arguments to reads it.")


def test_an_option_of_another_script_is_not_read_as_this_scripts():
    # run_asr_ctc.py reads its CTC head's options; the classification script has no CTC head.
    assert "superb_spec_augment" in READ["run_asr_ctc"]
    assert "superb_spec_augment" not in READ["run_audio_classification"]


def _declarations() -> dict[str, dict[str, type]]:
    """Option name -> {script: the class declaring it}, for the names in several scripts."""
    declared: dict[str, dict[str, type]] = defaultdict(dict)
    for script in SCRIPTS:
        for name, klass in options(script).items():
            declared[name][script] = klass
    return {name: by_script for name, by_script in sorted(declared.items()) if len(by_script) > 1}


@pytest.mark.parametrize("name", sorted(_declarations()))
def test_an_option_in_several_scripts_means_one_thing(name):
    by_script = _declarations()[name]
    assert len(set(by_script.values())) == 1, (
        f"--{name} is declared by " + ", ".join(f"{klass.__qualname__} in {script}.py"
                                                for script, klass in by_script.items()))


def test_the_student_options_mean_one_thing_each():
    by_script = {script: options(script) for script in SCRIPTS}
    assert "student_preset" in by_script["run_distill"]
    assert all("student_preset" not in by_script[script] and "random_student_preset" in by_script[script]
               for script in ("run_asr_ctc", "run_audio_classification"))
