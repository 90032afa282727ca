"""`genre --version`: genre's version and its libraries', read without importing them; runs in the
`genre` process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


class PrintVersions(argparse.Action):
    """Like argparse's `version` action, without re-wrapping the line to the terminal's width."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(versions())
        parser.exit()


def versions() -> str:
    """genre's version and those of the libraries a bug report needs."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {of(name)}" for name in ("ray", "torch", "torchaudio", "timm"))
    return f"genre {of('genre-ray')} (Python {sys.version.split()[0]}; {libraries})"
