"""A sweep's options as YAML: `genre sweep --config FILE` reads one, and every sweep writes its own.

Keys are the options' names, as the flags spell them or with underscores (`batch-size` or
`batch_size`; `weights` or `weights_dir`); a value of null is the option's default. A search space is a
mapping under `search_space:`, or under `search:` (a word there is the search algorithm). The file that a
sweep writes to OUT (`sweep.yaml`) holds the options it runs with, plus what only genre writes
(`manifest_sha256`, `resumed`), which `--config` ignores: so a finished sweep's file starts the same
sweep elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from data_pipeline.errors import UserInputError
from genre.sweep.options import SWEEP_LEVEL, TRAIN_OPTIONS, parse_per_model, parse_search_space

# A sweep's options fit in a few lines; a bigger file is a mistake (or worse), refused before parsing.
MAX_FILE_BYTES = 1_000_000
# What a file's aliases may add, in values: a few hundred bytes of nested aliases stand for billions of
# values once anything walks them, and PyYAML has no limit of its own.
MAX_ALIASED_VALUES = 10_000


class ConfigTooLarge(yaml.YAMLError):
    """A YAML file over MAX_FILE_BYTES, or whose aliases stand for more than MAX_ALIASED_VALUES."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader counting the values each alias stands for, refusing past MAX_ALIASED_VALUES."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._values_of: dict[int, int] = {}  # a composed node's id: the values it expands to
        self._aliased_values = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        aliased = self.check_event(yaml.AliasEvent)
        node = super().compose_node(parent, index)
        if aliased:
            values = self._values_of.get(id(node))
            if values is None:  # its anchor is still being composed
                raise ConfigTooLarge("an alias refers to the value that holds it (an endless value)")
            self._aliased_values += values
            if self._aliased_values > MAX_ALIASED_VALUES:
                raise ConfigTooLarge(f"its aliases stand for more than {MAX_ALIASED_VALUES:,} values")
            return node
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        self._values_of[id(node)] = 1 + sum(self._values_of[id(child)] for child in children)
        return node


def _safe_load_bounded(path: Path) -> Any:
    """yaml.safe_load of the file, refusing one over MAX_FILE_BYTES or with aliases past the limit."""
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)  # a FIFO or /dev/zero has no size to ask first
    if len(data) > MAX_FILE_BYTES:
        raise ConfigTooLarge(f"it is over {MAX_FILE_BYTES:,} bytes; a sweep's options fit in a few lines")
    return yaml.load(data.decode("utf-8"), Loader=_BoundedLoader)


# Where the sweep runs, not what it computes: the file may name them, a sweep's own file names
# DATA and, when it is not OUT, the run storage.
PLACES = ("data", "out", "storage", "address")
OPTIONS = ("models", *TRAIN_OPTIONS, *SWEEP_LEVEL)
# Written by genre into OUT's file; a --config file that holds them (a copy of one) is not refused.
RECORDED_ONLY = ("manifest_sha256", "resumed")
_ALIASES = {"weights": "weights_dir"}
# Options whose value is a mapping: handed to their flag as JSON text, which is YAML.
MAPPINGS = ("search_space", "per_model")
# The words YAML 1.1 turns into booleans, as the options that take them spell them.
_BOOLEAN_WORDS = {"amp": {True: "on", False: "off"}}


def option_name(key: str) -> str:
    """The option a file's key names: `batch-size` -> `batch_size`, `weights` -> `weights_dir`."""
    name = str(key).strip().replace("-", "_")
    return _ALIASES.get(name, name)


def read_options_file(path: str | Path) -> dict[str, Any]:
    """{option name: value} from a YAML mapping; nulls and genre's own record keys left out.

    Refuses, in one line naming the file, what is not a readable mapping of known options.
    """
    path = Path(path).expanduser()
    try:
        values = _safe_load_bounded(path)
    except OSError as error:
        raise UserInputError(f"--config {str(path)!r} cannot be read: {error.strerror}") from None
    except ConfigTooLarge as error:
        raise UserInputError(f"--config {str(path)!r} is refused: {error}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).splitlines()[0]
        raise UserInputError(f"--config {str(path)!r} is not YAML ({reason})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserInputError(
            f"--config {str(path)!r} must be a mapping of option: value, not a {type(values).__name__}"
        )
    options = {option_name(key): value for key, value in values.items()}
    if isinstance(options.get("search"), dict):  # `search:` naming distributions: the search space
        if options.get("search_space") is not None:
            raise UserInputError(
                f"--config {str(path)!r}: a search space under both search: and search_space:; keep one"
            )
        options["search_space"] = options.pop("search")
    if options.get("search_space") is not None:
        try:
            options["search_space"] = parse_search_space(options["search_space"])
        except UserInputError as error:
            raise UserInputError(f"--config {str(path)!r}: {error}") from None
    if options.get("per_model") is not None:
        try:
            options["per_model"] = parse_per_model(options["per_model"])
        except UserInputError as error:
            raise UserInputError(f"--config {str(path)!r}: {error}") from None
    unknown = sorted(set(options) - {*PLACES, *OPTIONS, *RECORDED_ONLY})
    if unknown:
        raise UserInputError(
            f"--config {str(path)!r}: unknown option(s) {', '.join(unknown)}; known: "
            f"{', '.join((*PLACES, *OPTIONS))}"
        )
    return {name: value for name, value in options.items() if value is not None and name not in RECORDED_ONLY}


def as_arguments(
    options: dict[str, Any], flag_of: dict[str, str], switches: frozenset[str] = frozenset()
) -> list[str]:
    """Command-line arguments that say what `options` say: the file goes through the CLI's own parser.

    `flag_of` maps an option's name to its flag; `switches` are flags without a value (`cv: true`
    gives `--cv`, false nothing); DATA and OUT are positional.
    """
    positional = [str(options[name]) for name in ("data", "out") if name in options]
    arguments = []
    for name, value in options.items():
        if name in ("data", "out"):
            continue
        if name in switches:
            if not isinstance(value, bool):
                raise UserInputError(f"--config: {name} must be true or false, not {value!r}")
            arguments += [flag_of[name]] if value else []
            continue
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        elif isinstance(value, bool):
            # YAML reads `pretrained: no` and `amp: off` as false: the word the option takes.
            value = _BOOLEAN_WORDS.get(name, {True: "yes", False: "no"})[value]
        elif isinstance(value, dict) and name in MAPPINGS:
            value = json.dumps(value)
        elif isinstance(value, dict):
            raise UserInputError(f"--config: {name} cannot be a mapping")
        arguments += [flag_of[name], str(value)]
    return [*positional, *arguments]


HEADER = """\
# The options this sweep runs with (null: the option's default, or each model's own lr and dropout).
# `genre sweep DATA OUT --resume` continues this sweep from this file; `genre sweep --config FILE
# [DATA] OUT` starts the same sweep elsewhere. manifest_sha256 and resumed are genre's own record.
"""


def dump(values: dict[str, Any]) -> str:
    """`values` as YAML in their given order, under the header that says how to use the file."""
    return HEADER + yaml.safe_dump(values, sort_keys=False, default_flow_style=None, width=100)


def load(path: Path) -> dict[str, Any]:
    """A sweep's own file, as written by `dump`."""
    values = _safe_load_bounded(path)
    if not isinstance(values, dict):
        raise ValueError(f"not a mapping but {type(values).__name__}")
    return values
