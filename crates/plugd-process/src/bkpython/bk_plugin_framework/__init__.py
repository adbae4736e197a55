"""plugd's bk_plugin_framework: the kit of BlueKing's Python bk-plugin-framework (2.3.x), as plugd runs it.

plugd ships this package and puts it first on the path of the Python host that runs a bk-plugin
project, so the project's `from bk_plugin_framework.kit import ...` finds it; Django, Celery, a broker
and a database are not needed. Models are the project's own pydantic (its v1 API).
"""

# The framework version whose kit this package provides.
__version__ = "2.3.15"
