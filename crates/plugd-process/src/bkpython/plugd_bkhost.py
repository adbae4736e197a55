"""plugd's Python host for a bk-plugin project (see README.md, "Bring your bk-plugin project").

    python plugd_bkhost.py describe PROJECT
        imports the project and writes its versions, schemas and description as JSON.
    python plugd_bkhost.py serve PROJECT THREADS
        imports the project once, then answers executes: one JSON object per line on standard
        input, one answer per line on standard output, up to THREADS executes at once on threads.
        A message with "kind": "api" is a data-source call, answered by the project's views
        (bk_plugin/apis/urls.py) with Django set up on first use.

The protocol keeps the original standard input and output; the plugin's own prints go to standard
error. Logs written during an execute (the `bk_plugin` logger, or any other) come back with its answer.

This script reads the command line and runs the message loop; each job is a module of the plugd_host
package beside it (see plugd_host/__init__.py).
"""

import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

from plugd_host import log_capture, protocol
from plugd_host.describe import describe
from plugd_host.django_emulation import call_api
from plugd_host.execute import execute
from plugd_host.process_limits import limit_memory, not_dumpable
from plugd_host.project import import_project


def serve(project, threads):
    """Imports the project, says it is ready, then answers each message on a thread of its own, until
    plugd closes standard input; then exits once every answer under way is written."""
    proto_in, proto_out = protocol.open_streams()
    send = protocol.LineWriter(proto_out).send

    try:
        _, hub = import_project(project)
    except BaseException:  # noqa: BLE001
        send({"fatal": traceback.format_exc(limit=-8).rstrip()})
        return 1
    send({"ready": True, "versions": list(hub), "pid": os.getpid()})

    def handle(msg):
        log_capture.begin()
        try:
            reply = call_api(msg) if msg.get("kind") == "api" else execute(hub, msg)
        except BaseException as error:  # noqa: BLE001 - every execute gets an answer
            reply = {"result": "unexpected", "message": "plugd host: %s" % error, "storage": {}, "outputs": {}}
        reply["id"], reply["nonce"] = msg["id"], msg.get("nonce", "")
        reply["logs"] = log_capture.end()
        try:
            send(reply)
        except (TypeError, ValueError) as error:
            send(
                {
                    "id": msg["id"],
                    "result": "unexpected",
                    "message": "plugin context json dumps error: %s" % error,
                    "storage": {},
                    "outputs": {},
                    "logs": reply["logs"],
                }
            )

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bk-execute")
    for msg in protocol.read_messages(proto_in):
        pool.submit(handle, msg)
    # plugd closed the pipe: it is done with this host once the executes under way have answered.
    pool.shutdown(wait=True)
    proto_out.flush()
    os._exit(0)


def main(argv):
    not_dumpable()
    limit_memory()
    log_capture.setup_logging()
    if len(argv) == 3 and argv[1] == "describe":
        return describe(os.path.abspath(argv[2]))
    if len(argv) == 4 and argv[1] == "serve":
        return serve(os.path.abspath(argv[2]), int(argv[3]))
    sys.stderr.write("usage: plugd_bkhost.py describe PROJECT | serve PROJECT THREADS\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
