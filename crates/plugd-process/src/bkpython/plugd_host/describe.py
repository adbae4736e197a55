"""`describe`: what plugd learns of a project when it loads it (its versions with their schemas, its
description and allowed scope, whether it has data-source views), from one short-lived import.

Whatever goes wrong, plugd gets a JSON document: the error's traceback is what it shows the user.
"""

import traceback

from plugd_host import protocol
from plugd_host.django_emulation import views_status
from plugd_host.project import import_project


def describe(project):
    """Writes the description of `project` as one JSON document; 0 if it could be imported, else 1."""
    _, proto_out = protocol.open_streams()
    try:
        meta, hub = import_project(project)
        versions = []
        for cls in hub.values():
            detail = cls.dict()
            detail["class"] = "%s.%s" % (cls.__module__, cls.__qualname__)
            versions.append(detail)
        allow_scope = getattr(meta, "allow_scope", None) or {}
        answer = {
            "description": getattr(meta, "description", "") or "",
            "allow_scope": allow_scope,
            "versions": versions,
            "apis": views_status(project),
        }
        code = 0
    except BaseException:  # noqa: BLE001 - reported to plugd, whatever it is
        answer = {"error": traceback.format_exc(limit=-8).rstrip()}
        code = 1
    protocol.write_document(proto_out, answer)
    return code
