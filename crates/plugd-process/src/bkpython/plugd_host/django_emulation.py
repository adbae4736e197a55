"""Data-source calls (a message with "kind": "api"), answered by the project's own Django views
(bk_plugin/apis/urls.py), as the framework's runtime would answer them over HTTP.

plugd runs no web server for a project, so this module sets Django up itself, lazily on the first
call and as little as the views need (no database, no middleware), resolves the call's path in the
project's URL patterns and calls the view with the request the framework would build. Nothing here
imports Django until a call comes: describe and executes never need it.
"""

import importlib
import json
import logging
import os
import sys
import threading
import traceback

# The packages data-source views need: (module, what to install).
API_PACKAGES = [("django", "Django"), ("rest_framework", "djangorestframework")]
API_PREFIX = "/bk_plugin/plugin_api/"
RUNTIME_SETTINGS = {"INSTALLED_APPS", "MIDDLEWARE", "DATABASES", "ROOT_URLCONF"}

_django_lock = threading.Lock()
_django_ready = None  # None: not tried; True; or the reason it cannot be


def views_status(project):
    """Whether the project has data-source views (bk_plugin/apis/urls.py), and which of the packages
    they need its environment lacks (looked up, not imported)."""
    import importlib.util

    if not os.path.isfile(os.path.join(project, "bk_plugin", "apis", "urls.py")):
        return {"urls": False, "missing": []}
    missing = [name for module, name in API_PACKAGES if importlib.util.find_spec(module) is None]
    return {"urls": True, "missing": missing}


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


def call_api(msg):
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
