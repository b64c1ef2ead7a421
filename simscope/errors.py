"""The one error type for user mistakes. Everything else is a bug and may raise."""

from __future__ import annotations


class SimscopeError(Exception):
    """A user mistake; the CLI prints it without a traceback and exits 1.

    The message says where (file, line, field), what was expected, what was found, and
    the fix.
    """
