"""How the host talks to plugd: JSON over the standard input and output plugd started it with.

The protocol needs those two pipes to itself, yet a project may read standard input or print: the
host keeps its own copies of them and hands the project end of file and standard error instead.
Writing JSON one way (UTF-8, no ASCII escaping, lone surrogates passed through) in one place keeps
every answer encoded as plugd reads it.
"""

import json
import os
import threading


def open_streams():
    """The original standard input and output, for the protocol; the plugin's own reads get end of
    file and its prints go to standard error."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return proto_in, proto_out


def _encode(text):
    return text.encode("utf-8", "surrogatepass")


def write_document(proto_out, obj):
    """Writes `obj` as the one JSON document of the output (describe's answer), with no newline."""
    proto_out.write(_encode(json.dumps(obj, ensure_ascii=False)))
    proto_out.flush()


class LineWriter:
    """Writes answers one JSON object per line; answers come from many threads, a line at a time.

    An object JSON cannot encode raises (TypeError, ValueError) before anything is written."""

    def __init__(self, proto_out):
        self._out = proto_out
        self._lock = threading.Lock()

    def send(self, obj):
        line = _encode(json.dumps(obj, ensure_ascii=False) + "\n")
        with self._lock:
            self._out.write(line)
            self._out.flush()


def read_messages(proto_in):
    """The messages plugd sends, one JSON object per line, until it closes the pipe."""
    for line in proto_in:
        yield json.loads(line)
