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
"""

import importlib
import json
import logging
import os
import pkgutil
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

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


def _setup_logging():
    handler = _Capture()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)


def _not_dumpable():
    """Makes this host non-dumpable before any project code runs: another process of the same user
    (another project's host) can then neither read its memory (/proc/<pid>/mem: inputs, storage,
    callback URLs) nor attach to it. Linux only; elsewhere nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_DUMPABLE = 4
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.stderr.write("plugd host: cannot make the host non-dumpable (errno %d)\n" % ctypes.get_errno())


def _limit_memory():
    limit = os.environ.get("PLUGD_HOST_MEMORY")
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))


def _import_project(project):
    """Imports every module of bk_plugin/versions (names not starting with '_') and bk_plugin.meta."""
    sys.path.insert(1, project)
    os.chdir(project)
    versions = importlib.import_module("bk_plugin.versions")
    for info in pkgutil.walk_packages(versions.__path__, "bk_plugin.versions."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        importlib.import_module(info.name)
    meta = importlib.import_module("bk_plugin.meta")
    from bk_plugin_framework.kit.plugin import _HUB

    return meta, _HUB


def _protocol_streams():
    """The original standard input and output, for the protocol; the plugin's own reads get end of
    file and its prints go to standard error."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return proto_in, proto_out


def _apis(project):
    """Whether the project has data-source views (bk_plugin/apis/urls.py), and which of the packages
    they need its environment lacks (looked up, not imported)."""
    import importlib.util

    if not os.path.isfile(os.path.join(project, "bk_plugin", "apis", "urls.py")):
        return {"urls": False, "missing": []}
    missing = [name for module, name in API_PACKAGES if importlib.util.find_spec(module) is None]
    return {"urls": True, "missing": missing}


def describe(project):
    _, proto_out = _protocol_streams()
    try:
        meta, hub = _import_project(project)
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
            "apis": _apis(project),
        }
        code = 0
    except BaseException:  # noqa: BLE001 - reported to plugd, whatever it is
        answer = {"error": traceback.format_exc(limit=-8).rstrip()}
        code = 1
    proto_out.write(json.dumps(answer, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    proto_out.flush()
    return code


def _execute(hub, msg):
    from bk_plugin_framework.kit.plugin import (
        Callback,
        CallbackPreparation,
        Context,
        InputsModel,
        Plugin,
        State,
    )

    storage, outputs = msg.get("storage") or {}, msg.get("outputs") or {}

    def answer(result, message=None, **more):
        return dict(result=result, message=message, storage=storage, outputs=outputs, **more)

    cls = hub.get(msg["version"])
    if cls is None:
        return answer("unexpected", "this project has no plugin version %s" % msg["version"])
    try:
        inputs = getattr(cls, "Inputs", InputsModel)(**msg.get("inputs", {}))
    except Exception as error:  # noqa: BLE001 - pydantic's ValidationError, or a model's own
        return answer("inputs", str(error))
    context_model = getattr(cls, "ContextInputs", None)
    try:
        data = context_model(**msg.get("context", {})) if context_model is not None else None
    except Exception as error:  # noqa: BLE001
        return answer("context", str(error))
    callback = msg.get("callback")
    context = Context(
        trace_id=msg["trace_id"],
        data=data,
        state=State[msg["state"]],
        invoke_count=msg["invoke_count"],
        callback=Callback(callback["id"], callback["data"]) if callback else None,
        storage=storage,
        outputs=outputs,
    )
    prepared = msg.get("prepared_callback")
    if prepared:
        context._plugd_callback = CallbackPreparation(prepared["id"], prepared["url"])
    logger = logging.getLogger("bk_plugin")
    stage = "execute" if context.state is State.EMPTY else "schedule"
    try:
        plugin = cls()
        plugin.execute(inputs=inputs, context=context)
    except Plugin.Error as error:
        logger.exception("[%s] plugin execute failed", stage)
        storage, outputs = context.storage, context.outputs
        return answer("failed", str(error))
    except BaseException as error:  # noqa: BLE001 - SystemExit in a thread included
        logger.exception("[%s] plugin execute raise unexpected error", stage)
        # As the framework says it (str), but never nothing: a MemoryError has no message.
        return answer("unexpected", str(error) or type(error).__name__)
    storage, outputs = context.storage, context.outputs
    interval = getattr(plugin, "_poll_interval", -1)
    if interval != -1:
        logger.info("[%s] plugin wait poll", stage)
        return answer("poll", poll_after=float(interval))
    if getattr(plugin, "is_waiting_callback", False):
        logger.info("[%s] plugin wait callback", stage)
        return answer("callback")
    return answer("success")


# The packages data-source views need: (module, what to install).
API_PACKAGES = [("django", "Django"), ("rest_framework", "djangorestframework")]
API_PREFIX = "/bk_plugin/plugin_api/"
RUNTIME_SETTINGS = {"INSTALLED_APPS", "MIDDLEWARE", "DATABASES", "ROOT_URLCONF"}

_django_lock = threading.Lock()
_django_ready = None  # None: not tried; True; or the reason it cannot be


class DummyUser:
    """The user of a dispatched call, as the framework forces it on the view (`request.user`)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, username):
        self.username = username

    def get_username(self):
        return self.username

    def __str__(self):
        return self.username


def _setup_django():
    """Configures Django once, as little as the views need: no database, no middleware, the
    project's URL patterns under /bk_plugin/plugin_api/ and its bk_plugin/settings.py."""
    global _django_ready
    with _django_lock:
        if _django_ready is not None:
            return _django_ready
        try:
            import types

            import django
            from django.conf import settings

            extra = {}
            try:
                project_settings = importlib.import_module("bk_plugin.settings")
            except ModuleNotFoundError as error:
                if error.name not in ("bk_plugin.settings",):
                    raise
            else:
                # What the runtime's own settings decide (apps, middleware, the database, the URLs)
                # stays plugd's: there is no database here.
                extra = {k: v for k, v in vars(project_settings).items() if k.isupper() and k not in RUNTIME_SETTINGS}
            urls = types.ModuleType("plugd_bkurls")
            sys.modules["plugd_bkurls"] = urls
            config = dict(
                DEBUG=False,
                SECRET_KEY=os.environ.get("BKPAAS_APP_SECRET", os.environ.get("BK_APP_SECRET", "plugd-bk-plugin")),
                ALLOWED_HOSTS=["*"],
                INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
                MIDDLEWARE=[],
                DATABASES={},
                USE_TZ=True,
                BKPAAS_ENVIRONMENT=os.environ.get("BKPAAS_ENVIRONMENT", "prod"),
                REST_FRAMEWORK={"DEFAULT_AUTHENTICATION_CLASSES": [], "DEFAULT_PERMISSION_CLASSES": []},
            )
            config.update(extra)
            config["ROOT_URLCONF"] = "plugd_bkurls"
            settings.configure(**config)
            django.setup()
            from django.urls import include, path

            urls.urlpatterns = [path(API_PREFIX.lstrip("/"), include("bk_plugin.apis.urls"))]
            _django_ready = True
        except ImportError as error:
            _django_ready = "the data-source views need %s: add it to requirements.txt and reinstall (%s)" % (
                " and ".join(name for module, name in API_PACKAGES),
                error,
            )
        except BaseException:  # noqa: BLE001 - reported with every call
            _django_ready = "cannot set up Django for the data-source views:\n" + traceback.format_exc(limit=-8).rstrip()
        return _django_ready


def _json_value(data):
    """A view's data as plain JSON, with DRF's encoder (dates, decimals, UUIDs...)."""
    from rest_framework.utils.encoders import JSONEncoder

    return json.loads(json.dumps(data, cls=JSONEncoder, ensure_ascii=False))


def _api(msg):
    """One data-source call: resolves the path in the project's URL patterns and calls the view with
    the request the framework would build (RequestFactory, the forwarded headers, the user)."""
    ready = _setup_django()
    if ready is not True:
        return {"result": "api_unavailable", "message": ready}
    from urllib.parse import urlencode

    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory
    from django.urls import Resolver404, resolve

    path = msg.get("path", "").strip("/")
    candidates = [API_PREFIX + path + "/", API_PREFIX + path] if path else [API_PREFIX]
    match = None
    for url in candidates:
        try:
            match = resolve(url)
            break
        except Resolver404:
            continue
    if match is None:
        return {"result": "api_missing"}
    headers = {}
    for name, value in (msg.get("headers") or {}).items():
        key = name.upper().replace("-", "_")
        headers[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    factory = RequestFactory()
    query = msg.get("query") or {}
    if msg.get("method") == "POST":
        target = url + ("?" + urlencode(query) if query else "")
        body = msg.get("body")
        data = json.dumps(body if body is not None else {})
        request = factory.post(target, data=data, content_type="application/json", **headers)
    else:
        request = factory.get(url, data=query, **headers)
    username = msg.get("username")
    request.user = DummyUser(username) if username is not None else AnonymousUser()
    if username is not None:
        request._force_auth_user = request.user
    request.jwt = None
    try:
        response = match.func(request, *match.args, **match.kwargs)
    except BaseException as error:  # noqa: BLE001 - the framework answers 500 with its text
        logging.getLogger("bk_plugin").exception("plugin api %s raised", url)
        return {"result": "unexpected", "message": str(error)}
    if hasattr(response, "data"):
        data = _json_value(response.data)
    else:
        content = getattr(response, "content", b"")
        try:
            data = json.loads(content)
        except ValueError:
            data = content.decode("utf-8", "replace")
    return {"result": "api", "status": response.status_code, "data": data}


def serve(project, threads):
    proto_in, proto_out = _protocol_streams()
    write_lock = threading.Lock()

    def send(obj):
        line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        with write_lock:
            proto_out.write(line)
            proto_out.flush()

    try:
        _, hub = _import_project(project)
    except BaseException:  # noqa: BLE001
        send({"fatal": traceback.format_exc(limit=-8).rstrip()})
        return 1
    send({"ready": True, "versions": list(hub), "pid": os.getpid()})

    def handle(msg):
        _local.logs, _local.log_bytes = [], 0
        try:
            reply = _api(msg) if msg.get("kind") == "api" else _execute(hub, msg)
        except BaseException as error:  # noqa: BLE001 - every execute gets an answer
            reply = {"result": "unexpected", "message": "plugd host: %s" % error, "storage": {}, "outputs": {}}
        reply["id"], reply["nonce"] = msg["id"], msg.get("nonce", "")
        # The list is the execute's to append to (plugd caps what it reads too): kept within the caps.
        reply["logs"] = (_local.logs or [])[:MAX_LOG_LINES]
        _local.logs = None
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
    for line in proto_in:
        pool.submit(handle, json.loads(line))
    # plugd closed the pipe: it is done with this host once the executes under way have answered.
    pool.shutdown(wait=True)
    proto_out.flush()
    os._exit(0)


def main(argv):
    _not_dumpable()
    _limit_memory()
    _setup_logging()
    if len(argv) == 3 and argv[1] == "describe":
        return describe(os.path.abspath(argv[2]))
    if len(argv) == 4 and argv[1] == "serve":
        return serve(os.path.abspath(argv[2]), int(argv[3]))
    sys.stderr.write("usage: plugd_bkhost.py describe PROJECT | serve PROJECT THREADS\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
