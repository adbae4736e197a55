"""One execute of a plugin version, as the framework runs it: the message's inputs and context
validated by the version's own models, a Context built from the message, the plugin's execute
called, and its outcome (success, poll, callback, or an error) answered with storage and outputs.

The answer's `result` names the outcome as plugd reads it: success, poll, callback, failed, inputs,
context or unexpected.
"""

import logging


def execute(hub, msg):
    """Runs the execute `msg` asks for with the plugin classes of `hub`, by version; returns the answer."""
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
