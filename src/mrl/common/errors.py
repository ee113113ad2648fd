"""The framework's own config errors: one line that starts with the offending ``key=value``."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

# The exceptions a config mistake raises (NestingError is a ValueError; a wrong column is a KeyError).
CONFIG_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError)


def _message(error: BaseException) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def is_config_error(error: BaseException) -> bool:
    """True for a config mistake whose one-line message is the whole story (no traceback needed): one of
    `CONFIG_ERRORS` whose message starts with the offending ``key=value``."""
    return isinstance(error, CONFIG_ERRORS) and re.match(r"^[\w.\[\]]+=", _message(error)) is not None


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
    """A config error, or a write that found the disk full (:class:`mrl.common.io.DiskFullError`): its one line
    says what to do, and the files it would have replaced are intact."""
    from mrl.common.io import DiskFullError

    return is_config_error(error) or isinstance(error, DiskFullError)


def exit_on_config_error(run: Callable[[], Any]) -> Any:
    """``run()``; a config error or a full disk ends the process with its one line on stderr, anything else
    propagates."""
    try:
        return run()
    except Exception as error:
        if is_one_line_error(error):
            print(f"{type(error).__name__}: {_message(error)}", file=sys.stderr)
            sys.exit(1)
        raise
