"""Plugin, its models, Context and Callback: the kit as the framework documents it.

Models are pydantic models of the v1 API (`pydantic.v1` under pydantic 2, else pydantic 1), so
validation, conversion, error texts and `.schema()` are pydantic's own.
"""

import re

try:
    from pydantic.v1 import BaseModel, Field
except ImportError:  # pydantic 1
    from pydantic import BaseModel, Field

from bk_plugin_framework.constants import State

__all__ = [
    "Field",
    "Callback",
    "CallbackPreparation",
    "Context",
    "ContextRequire",
    "FormModel",
    "InputsModel",
    "OutputsModel",
    "Plugin",
    "PluginCallbackModel",
    "State",
]

VERSION_PATTERN = re.compile(r"^[0-9]+\.[0-9]+\.[0-9][a-z0-9]*$")
MAX_VERSION_LENGTH = 128

# Plugin classes by version, in the order they were defined.
_HUB = {}


class InputsModel(BaseModel):
    """Base of a plugin's `Inputs`."""


class OutputsModel(BaseModel):
    """Base of a plugin's `Outputs`."""


class ContextRequire(BaseModel):
    """Base of a plugin's `ContextInputs`."""


class PluginCallbackModel(BaseModel):
    """Where to post when an asynchronous invocation finishes (`context.plugin_callback_info`)."""

    url: str
    data: dict


class FormModel:
    """Base of a plugin's `InputsForm`: each public, non-callable attribute is a dict merged into the
    property of the same name of the inputs schema."""


class Callback:
    """The callback that triggered this execute: `id` (as prepared) and `data` (the posted JSON)."""

    def __init__(self, callback_id=None, data=None):
        self.id = callback_id
        self.data = data

    def __repr__(self):
        return "Callback(id=%r, data=%r)" % (self.id, self.data)


class CallbackPreparation:
    """A prepared callback: give `url` to the third party, keep `id` in storage."""

    def __init__(self, callback_id, url):
        self.id = callback_id
        self.url = url

    def __repr__(self):
        return "CallbackPreparation(id=%r, url=%r)" % (self.id, self.url)


class Context:
    """The context of one execute.

    `trace_id`, `data` (the validated `ContextInputs`, None without one), `state`, `invoke_count`
    (1-based), `callback` (None unless a callback triggered this execute), `storage` and `outputs`
    (JSON objects kept between executes).
    """

    def __init__(self, trace_id, data, state, invoke_count, callback=None, storage=None, outputs=None):
        self.trace_id = trace_id
        self.data = data
        self.state = state
        self.invoke_count = invoke_count
        self.callback = callback
        self.storage = {} if storage is None else storage
        self.outputs = {} if outputs is None else outputs
        # The callback plugd prepared for this execute (see Plugin.prepare_callback).
        self._plugd_callback = None

    @property
    def schedule_context(self):
        return {
            "storage": self.storage,
            "outputs": self.outputs,
            "data": self.data.dict() if self.data is not None else {},
        }

    @property
    def plugin_callback_info(self):
        return getattr(self.data, "plugin_callback_info", None)


def _check_inner(cls, name, base):
    inner = getattr(cls, name, None)
    if inner is not None and not (isinstance(inner, type) and issubclass(inner, base)):
        raise TypeError("%s.%s must be a subclass of %s" % (cls.__qualname__, name, base.__name__))


class PluginMeta(type):
    """Checks a plugin class as it is defined and registers it under its version."""

    def __new__(mcs, name, bases, attrs):
        cls = super().__new__(mcs, name, bases, attrs)
        if not [b for b in bases if isinstance(b, PluginMeta)]:
            return cls  # Plugin itself
        meta = getattr(cls, "Meta", None)
        if meta is None:
            raise TypeError("plugin %s has no Meta" % name)
        version = getattr(meta, "version", None)
        if not isinstance(version, str):
            raise TypeError("plugin %s: Meta.version must be a str" % name)
        if len(version) > MAX_VERSION_LENGTH or not VERSION_PATTERN.match(version):
            raise ValueError("plugin %s: Meta.version %r does not match %s" % (name, version, VERSION_PATTERN.pattern))
        desc = getattr(meta, "desc", "")
        if not isinstance(desc, str):
            raise TypeError("plugin %s: Meta.desc must be a str" % name)
        _check_inner(cls, "Inputs", InputsModel)
        _check_inner(cls, "Outputs", OutputsModel)
        _check_inner(cls, "ContextInputs", ContextRequire)
        _check_inner(cls, "InputsForm", FormModel)
        if version in _HUB:
            raise RuntimeError(
                "plugin version %s is defined twice: %s and %s" % (version, _HUB[version].__qualname__, name)
            )
        _HUB[version] = cls
        return cls


def trim_schema(model):
    """A model's pydantic schema as the detail endpoint shows it: type, properties, required, definitions."""
    if model is None:
        return {"type": "object", "properties": {}, "required": [], "definitions": {}}
    schema = model.schema()
    return {
        "type": schema.get("type", "object"),
        "properties": schema.get("properties", {}),
        "required": schema.get("required", []),
        "definitions": schema.get("definitions", {}),
    }


class Plugin(metaclass=PluginMeta):
    """Base of every plugin version: define `Meta` (version, desc), optionally `Inputs`, `Outputs`,
    `ContextInputs` and `InputsForm`, and `execute(self, inputs, context)`."""

    class Error(Exception):
        """An expected failure: the invocation fails with this message."""

    def __init__(self):
        self._poll_interval = -1
        self.is_waiting_callback = False

    def execute(self, inputs, context):
        raise NotImplementedError()

    def wait_poll(self, interval):
        """Executes again after `interval` seconds (0: at once)."""
        self.is_waiting_callback = False
        self._poll_interval = max(interval, 0)

    def wait_callback(self):
        """Executes again when a prepared callback arrives."""
        self._poll_interval = -1
        self.is_waiting_callback = True

    @property
    def is_wating_poll(self):  # the framework's spelling
        return self._poll_interval != -1

    @property
    def poll_interval(self):
        return self._poll_interval

    @staticmethod
    def prepare_callback(context):
        """A callback for this invocation: `.url` to give to a third party, `.id` to keep."""
        prepared = getattr(context, "_plugd_callback", None)
        if prepared is None:
            raise RuntimeError("no callback URL can be prepared here (plugd gave this execute none)")
        return prepared

    @classmethod
    def dict(cls):
        """The detail payload of this version."""
        meta = cls.Meta
        inputs = trim_schema(getattr(cls, "Inputs", None))
        form = getattr(cls, "InputsForm", None)
        if form is not None:
            for attr in dir(form):
                value = getattr(form, attr)
                if attr.startswith("_") or callable(value) or not isinstance(value, dict):
                    continue
                inputs["properties"].setdefault(attr, {}).update(value)
        return {
            "desc": getattr(meta, "desc", ""),
            "version": meta.version,
            "enable_plugin_callback": bool(getattr(meta, "enable_plugin_callback", False)),
            "inputs": inputs,
            "outputs": trim_schema(getattr(cls, "Outputs", None)),
            "context_inputs": trim_schema(getattr(cls, "ContextInputs", None)),
        }
