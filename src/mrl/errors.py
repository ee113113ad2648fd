"""The framework's own config errors: one line that starts with the offending ``key=value``."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

CONFIG_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError)  # NestingError is a ValueError


def is_config_error(error: BaseException) -> bool:
    """True for a config mistake whose one-line message is the whole story (no traceback needed)."""
    return isinstance(error, CONFIG_ERRORS) and re.match(r"^[\w.\[\]]+=", str(error)) is not None


def exit_on_config_error(run: Callable[[], Any]) -> Any:
    """``run()``; a config error ends the process with its one line on stderr, anything else propagates."""
    try:
        return run()
    except Exception as error:
        if is_config_error(error):
            print(f"{type(error).__name__}: {error}", file=sys.stderr)
            sys.exit(1)
        raise
