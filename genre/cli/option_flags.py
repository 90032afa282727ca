"""Command-line flags generated from config fields' metadata, so that an option is declared once, as a
field; runs in the `genre` process."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# What a field's metadata holds to be a flag:
#   help     its help text, "{default}" standing for the field's default
#   group    the title of the --help section that lists it
#   metavar, choices, type   for argparse, where the field's annotation does not say it (type: a parser
#            of the text, as "N|auto" to a number or None)
# A bool field is a switch. No flag has a default: an option left out is None, so that --config and
# --resume can tell it from one given, and the field's default applies after them.


def add_option_flags(
    groups: Mapping[str, argparse._ArgumentGroup],
    config: type,
    names: Iterable[str],
    flag_of: Callable[[str], str],
) -> None:
    """A flag `flag_of(name)`, with `dest` the option's name, for each of `config`'s fields `names`."""
    annotations = typing.get_type_hints(config)
    fields = {field.name: field for field in dataclasses.fields(config)}
    for name in names:
        field = fields[name]
        if "help" not in field.metadata or "group" not in field.metadata:
            raise TypeError(f"{config.__name__}.{name} is an option without a flag: give it help and group")
        group = groups[field.metadata["group"]]
        group.add_argument(flag_of(name), dest=name, **_argparse_keywords(field, annotations[name]))


def _argparse_keywords(field: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    metadata = field.metadata
    keywords: dict[str, Any] = {"help": metadata["help"].format(default=field.default)}
    value_type = _without_none(annotation)
    if value_type is bool:
        # store_const rather than store_true: left out is None, not False (see above).
        return {**keywords, "action": "store_const", "const": True}
    keywords["type"] = metadata.get("type", value_type)
    return {**keywords, **{key: metadata[key] for key in ("metavar", "choices") if key in metadata}}


def _without_none(annotation: Any) -> Any:
    """`int | None` -> int: the type of the values a flag takes."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (value_type,) = (arg for arg in typing.get_args(annotation) if arg is not type(None))
        return value_type
    return annotation
