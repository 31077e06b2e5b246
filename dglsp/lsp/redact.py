"""Keep document text out of the log unless debug logging is on.

Our own log lines name documents by file name and never include their text. pygls is
less careful: at INFO it logs every message it sends ("Sending data: ..."), and its
error paths log a failed message's params (a `didOpen`'s whole text) and tracebacks whose
messages can quote them. Below DEBUG this filter drops pygls' INFO chatter and replaces
the arguments and traceback of its warnings and errors with a placeholder.
"""

from __future__ import annotations

import logging

REDACTED = "<redacted: run with --log-level DEBUG to see message contents>"


class RedactDocumentText(logging.Filter):
    """Installed on the log handler when the level is above DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("pygls"):
            return True
        if record.levelno < logging.WARNING:
            return False  # pygls' INFO lines echo whole messages and say nothing a user needs
        if record.args:
            record.args = tuple(arg if _is_label(arg) else REDACTED for arg in _as_tuple(record.args))
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.msg} ({record.exc_info[0].__name__}; traceback redacted)"
            record.exc_info = None
            record.exc_text = None
        return True


def _as_tuple(args: object) -> tuple:
    return args if isinstance(args, tuple) else (args,)


def _is_label(arg: object) -> bool:
    """Message ids and method names are safe to log; anything else may carry document text."""
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return True
    return isinstance(arg, str) and len(arg) <= 100 and arg.replace("/", "").replace("$", "").replace("_", "") \
        .replace("-", "").isalnum()


def install(handler: logging.Handler, level: int) -> None:
    if level > logging.DEBUG:
        handler.addFilter(RedactDocumentText())
