"""The qciplugin SDK as plugd provides it to qciplugin.yml plugins (on their PYTHONPATH).

`report_output` keeps CODING's rules and hands the report to plugd through $PLUGD_REPORTS_FILE.
"""
import json
import os
import sys

__all__ = ["report_output", "generate_access_token"]

_FIELDS = ("title", "description", "url", "report_html", "report_dir")


def _refuse(reason):
    sys.stderr.write("qciplugin: report_output: %s\n" % reason)
    return False


def report_output(output):
    """Reports an output now; returns False (and says why on stderr) when it is invalid."""
    if not isinstance(output, dict):
        return _refuse("expected a dict")
    report = {k: output[k] for k in _FIELDS if output.get(k) not in (None, "")}
    if "url" in report:
        # With a url, report_html and report_dir are ignored (CODING's rule).
        report.pop("report_html", None)
        report.pop("report_dir", None)
    if not any(k in report for k in ("description", "url", "report_html", "report_dir")):
        return _refuse("one of description, url, report_html or report_dir is required")
    if "report_dir" in report and "report_html" not in report:
        return _refuse("report_dir needs report_html as its index page")
    for key in ("report_html", "report_dir"):
        if key in report:
            report[key] = os.path.abspath(report[key])
    path = os.environ.get("PLUGD_REPORTS_FILE")
    if not path:
        return _refuse("not running under plugd ($PLUGD_REPORTS_FILE is not set)")
    with open(path, "a", encoding="utf-8") as reports:
        reports.write(json.dumps(report, ensure_ascii=False) + "\n")
    return True


def generate_access_token(expire=86400):
    """CODING's access tokens exist only inside CODING CI."""
    raise RuntimeError("generate_access_token needs CODING CI: plugd has no CODING token to give")
