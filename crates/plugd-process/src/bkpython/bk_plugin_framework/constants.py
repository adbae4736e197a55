"""Invocation states, with the framework's codes."""

from enum import Enum


class State(Enum):
    """The state of an invocation: EMPTY before its first execute, then POLL, CALLBACK, SUCCESS or FAIL."""

    EMPTY = 1
    POLL = 2
    CALLBACK = 3
    SUCCESS = 4
    FAIL = 5
