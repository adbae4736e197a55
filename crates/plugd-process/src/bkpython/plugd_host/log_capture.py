"""Logs written while a message is answered (the `bk_plugin` logger, or any other) go back to plugd
with its answer, so that they reach plugd's log at their level; executes run on threads at once, so
each thread keeps its own. Logs written outside an answer (describe, imports) go to standard error.
Both caps bound what one execute can make the host hold and send."""

import logging
import sys
import threading

MAX_LOG_LINES = 1000
MAX_LOG_BYTES = 256 * 1024

_local = threading.local()


class _Capture(logging.Handler):
    """Keeps the records of the execute running on this thread; others go to standard error."""

    def emit(self, record):
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a bad log call must not fail the execute
            text = str(record.msg)
        logs = getattr(_local, "logs", None)
        if logs is None:
            sys.stderr.write(text + "\n")
            return
        size = getattr(_local, "log_bytes", 0) + len(text)
        if len(logs) < MAX_LOG_LINES and size <= MAX_LOG_BYTES:
            _local.log_bytes = size
            logs.append([record.levelname, text])


def setup_logging():
    """Makes the capture the root logger's only handler, from INFO up, messages as they are."""
    handler = _Capture()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)


def begin():
    """Starts keeping this thread's logs, for the message it is about to answer."""
    _local.logs, _local.log_bytes = [], 0


def end():
    """Stops keeping this thread's logs and returns them, as [level name, text] pairs."""
    # The list is the execute's to append to (plugd caps what it reads too): kept within the caps.
    logs = (_local.logs or [])[:MAX_LOG_LINES]
    _local.logs = None
    return logs
