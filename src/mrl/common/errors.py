"""The framework's typed errors and the one-line handler every command's entry point runs under.

A :class:`ConfigError` (a setting) or an :class:`InputError` (a file, a folder, the data in it) is a user's
mistake: its message is one line that starts with the offending ``key=value`` and says what is valid, and the
entry point prints that line and exits 1. Anything else is a bug and keeps its traceback. Both are
``ValueError`` subclasses, so code that catches ``ValueError`` keeps working.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mrl.common.io import DiskFullError

__all__ = [
    "ConfigError",
    "InputError",
    "exit_on_config_error",
    "instantiate_clearly",
    "is_config_error",
    "is_one_line_error",
]

# Untyped exceptions that older checks raise with a ``key=value`` message (NestingError is a ValueError; a wrong
# column is a KeyError); recognised by that prefix while they are converted to the typed errors below.
CONFIG_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError)


def _shown(value: Any) -> str:
    return repr(str(value)) if isinstance(value, Path) else repr(value) if isinstance(value, str) else str(value)


class ConfigError(ValueError):
    """A setting with a value that cannot work: ``key=value: expected ...`` (``key`` is the dotted config key or
    the command-line option)."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={_shown(value)}: {expected}")


def rejected_keyword(error: TypeError, given: Mapping[str, Any], prefix: str, owner: str) -> ConfigError | None:
    """The ConfigError for a keyword the user gave (``given``) that ``owner`` refused with ``unexpected keyword
    argument 'x'`` (timm's and transformers' models take ``**kwargs``); None for any other TypeError (a bug)."""
    unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if not unknown or unknown.group(1) not in given:
        return None
    key = unknown.group(1)
    return ConfigError(f"{prefix}.{key}", given[key], f"{owner} takes no argument {key!r}")


class InputError(ValueError):
    """A file, folder or data set that cannot be used as given: ``key='path': what is wrong`` (``key`` names the
    argument that pointed there: ``embeddings``, ``out``, ``data.root``)."""

    def __init__(self, key: str, path: Any, problem: str) -> None:
        self.key, self.path, self.problem = key, path, problem
        super().__init__(f"{key}={_shown(path)}: {problem}")


def _message(error: BaseException) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def is_config_error(error: BaseException) -> bool:
    """True for a user's mistake whose one-line message is the whole story: a :class:`ConfigError` or
    :class:`InputError`, or (not yet converted) one of `CONFIG_ERRORS` whose message starts with ``key=value``."""
    if isinstance(error, ConfigError | InputError):
        return True
    return isinstance(error, CONFIG_ERRORS) and re.match(r"^[\w.\[\]+-]+=", _message(error)) is not None


def instantiate_clearly(cfg, **kwargs):
    """``hydra.utils.instantiate`` that re-raises a config error as itself, one line, not wrapped in Hydra's
    ``InstantiationException``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, CONFIG_ERRORS):
            raise cause.with_traceback(None) from None
        raise


def is_one_line_error(error: BaseException) -> bool:
    """A config or input error, or a write that found the disk full (:class:`mrl.common.io.DiskFullError`): its
    one line says what to do, and the files it would have replaced are intact."""
    return is_config_error(error) or isinstance(error, DiskFullError)


def exit_on_config_error(run: Callable[[], Any]) -> Any:
    """``run()``; a config or input error or a full disk ends the process with its one line on stderr (exit 1),
    anything else propagates with its traceback."""
    try:
        return run()
    except Exception as error:
        if is_one_line_error(error):
            print(f"{type(error).__name__}: {_message(error)}", file=sys.stderr)
            sys.exit(1)
        raise
