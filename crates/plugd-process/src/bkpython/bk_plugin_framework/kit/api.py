"""`PluginAPIView`, the base of a project's data-source views (`bk_plugin/apis/`).

It needs Django REST framework in the project's environment (`djangorestframework` in its
requirements.txt); without it, importing this module says so.
"""

import json
import os

try:
    from rest_framework.views import APIView
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bk_plugin_framework.kit.api needs Django REST framework: add djangorestframework to requirements.txt"
    ) from error

__all__ = ["PluginAPIView"]


class PluginAPIView(APIView):
    """A data-source view: plugd checks the caller before the request reaches it, so the view itself
    has no authentication or permission classes; `request.token` is the caller's `X-Bkapi-JWT`."""

    authentication_classes = []
    permission_classes = []

    def initial(self, request, *args, **kwargs):
        request.token = request.META.get("HTTP_X_BKAPI_JWT", "")
        super().initial(request, *args, **kwargs)

    def get_bkapi_authorization_info(self, request):
        """The `X-Bkapi-Authorization` header for calls to the API gateway or ESB on the user's behalf."""
        return json.dumps(
            {
                "bk_app_code": os.environ.get("BKPAAS_APP_ID", os.environ.get("BK_APP_CODE", "")),
                "bk_app_secret": os.environ.get("BKPAAS_APP_SECRET", os.environ.get("BK_APP_SECRET", "")),
                "jwt": getattr(request, "token", ""),
            }
        )
