"""The public kit plugins import: `from bk_plugin_framework.kit import Plugin, InputsModel, ...`."""

from bk_plugin_framework.kit.plugin import (  # noqa: F401
    Callback,
    CallbackPreparation,
    Context,
    ContextRequire,
    Field,
    FormModel,
    InputsModel,
    OutputsModel,
    Plugin,
    PluginCallbackModel,
    State,
)

__all__ = [
    "Field",
    "Callback",
    "Context",
    "ContextRequire",
    "FormModel",
    "InputsModel",
    "OutputsModel",
    "Plugin",
    "State",
]
