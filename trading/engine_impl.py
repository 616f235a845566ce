"""The matching engine the exchange runs: ``engine`` is trading.engine compiled by mypyc (bin/build-engine,
run by `make`) where that build exists and was made from the current source, else the pure module itself.

ENGINE_IMPL=pure forces the pure module; ENGINE_IMPL=compiled insists on the build (ImportError without it).
The two define their own command and event classes, so a caller takes every one of them from ``engine``.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pathlib
from types import ModuleType

from trading import engine as pure

CHOICES = ('auto', 'pure', 'compiled')


def compiled() -> ModuleType:
    """The compiled engine; ImportError when it was not built, or built from other source than today's."""
    package = pathlib.Path(pure.__file__).parent
    try:
        built_from = (package / '_compiled.sha256').read_text().strip()
    except FileNotFoundError:
        raise ImportError('the compiled engine is not built (bin/build-engine, run by make)') from None
    if built_from != hashlib.sha256((package / '__init__.py').read_bytes()).hexdigest():
        raise ImportError('the compiled engine was built from older source: run bin/build-engine')
    return importlib.import_module('trading.engine._compiled')


def load(choice: str) -> ModuleType:
    if choice not in CHOICES:
        raise ValueError(f'ENGINE_IMPL must be one of {", ".join(CHOICES)}, not {choice!r}')
    if choice == 'pure':
        return pure
    try:
        return compiled()
    except ImportError:
        if choice == 'compiled':
            raise
        return pure


engine = load(os.environ.get('ENGINE_IMPL') or 'auto')
