"""The parts of plugd's bk-plugin host (plugd_bkhost.py, the script plugd runs), one module per job.

plugd writes this package beside plugd_bkhost.py and bk_plugin_framework; Python puts the script's
folder first on sys.path, so `import plugd_host` finds it there, as projects find bk_plugin_framework.
It is named after plugd, not after the framework, so that it can clash neither with the framework's
packages plugd emulates nor with anything a project imports.

    protocol          the host's own standard input and output, and how messages are framed on them
    process_limits    what the host process is denied before any project code runs
    log_capture       logs of a message while it is being answered, sent back with its answer
    project           importing a project's versions and meta
    describe          `describe`: the project's versions, schemas and description
    execute           one execute of a plugin version
    django_emulation  data-source calls, answered by the project's Django views
"""
