"""What the host process is denied, set before any project code runs: project code is not plugd's,
and several projects' hosts may run as the same user."""

import os
import sys


def not_dumpable():
    """Makes this host non-dumpable before any project code runs: another process of the same user
    (another project's host) can then neither read its memory (/proc/<pid>/mem: inputs, storage,
    callback URLs) nor attach to it. Linux only; elsewhere nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_DUMPABLE = 4
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.stderr.write("plugd host: cannot make the host non-dumpable (errno %d)\n" % ctypes.get_errno())


def limit_memory():
    """Caps the host's address space at PLUGD_HOST_MEMORY bytes (RLIMIT_AS), when plugd gives one."""
    limit = os.environ.get("PLUGD_HOST_MEMORY")
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
