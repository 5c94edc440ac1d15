"""Command lines of the form `script.py [config.yaml] [--option value ...]`.

The YAML file gives the recipe; options on the command line override it. The YAML is turned into
the equivalent command-line options placed before the user's, so both go through the same
`HfArgumentParser` validation and the last value of an option wins.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


def yaml_to_argv(path: str | Path) -> list[str]:
    """`{"max_steps": 10, "train_splits": ["a", "b"], "bf16": true}` -> `--max_steps 10 --train_splits a b --bf16 true`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        # PyYAML's message names neither the file nor, for some errors, where the problem is.
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{path}: invalid YAML{where}: {problem}. Fix the recipe there (options are written "
                         "'name: value', one per line).") from err
    if not isinstance(recipe, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(recipe).__name__}.")
    argv: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, list):
            argv.extend(str(item) for item in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        elif isinstance(value, bool):
            argv.append("true" if value else "false")
        else:
            argv.append(str(value))
    return argv


def parse_config_and_args(parser: HfArgumentParser, argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse an optional leading YAML file plus command-line overrides into the parser's dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = yaml_to_argv(argv[0]) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)
