"""`qciplugin._vendor.requests`: the environment's own requests, when it has one (otherwise importing
it raises ImportError, as the plugin expects of a missing module)."""
import sys

try:
    import requests as _requests
except ImportError:
    pass
else:
    requests = _requests
    sys.modules[__name__ + ".requests"] = _requests
