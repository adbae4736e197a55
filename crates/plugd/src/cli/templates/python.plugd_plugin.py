"""plugd process protocol v1, for Python plugins (written by `plugd new`; one file, no dependencies).

The invocation arrives as JSON on stdin; the answer goes to $PLUGD_RESULT_FILE. Each answer
method ends the process: plugd runs the plugin again for a poll or a callback, with `storage` kept.
"""
import json
import os
import sys


class Invocation:
    def __init__(self, data):
        self.data = data
        self.trace_id = data["trace_id"]
        self.state = data["state"]  # EMPTY, POLL or CALLBACK
        self.invoke_count = data["invoke_count"]
        self.inputs = data["inputs"]
        self.context = data["context"]
        self.storage = data["storage"]
        self.outputs = data["outputs"]
        self.callback = data.get("callback")  # {"id", "data"} when a callback re-ran the plugin
        self.prepared_callback = data.get("prepared_callback")  # {"id", "url"} to hand out

    def _answer(self, status, **fields):
        result = {"status": status, "outputs": self.outputs, "storage": self.storage}
        result.update(fields)
        with open(os.environ["PLUGD_RESULT_FILE"], "w") as f:
            json.dump(result, f)
        sys.stdout.flush()
        sys.exit(0)

    def success(self, **outputs):
        self.outputs.update(outputs)
        self._answer("success")

    def fail(self, error):
        self._answer("fail", error=str(error))

    def poll(self, seconds):
        self._answer("poll", poll_interval=seconds)

    def wait_callback(self):
        """Wait for a POST to self.prepared_callback["url"] (remember its id in storage)."""
        self._answer("callback")

    def report(self, **report):
        """title, description, url, report_html, report_dir (the qci-plugin report_output rules)."""
        with open(os.environ["PLUGD_REPORTS_FILE"], "a") as f:
            f.write(json.dumps(report) + "\n")


def invocation():
    return Invocation(json.load(sys.stdin))
