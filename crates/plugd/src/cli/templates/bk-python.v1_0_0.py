import logging

from bk_plugin_framework.kit import Context, Field, InputsModel, OutputsModel, Plugin, State

logger = logging.getLogger("bk_plugin")


class Hello(Plugin):
    """Greets `name`: waits one poll round (`wait_poll`), then succeeds. Storage carries data from
    one execute to the next."""

    class Meta:
        version = "1.0.0"
        desc = "greets someone after one poll round"

    class Inputs(InputsModel):
        name: str = Field(title="name", description="who to greet")
        wait: int = Field(default=1, title="wait", description="seconds to wait before greeting")

    class Outputs(OutputsModel):
        greeting: str = Field(title="greeting", description="hello + name")
        polls: int = Field(title="polls", description="executes it took")

    def execute(self, inputs: Inputs, context: Context):
        if inputs.name == "":
            raise self.Error("name must not be empty")
        if context.state is State.EMPTY:
            context.storage["started_by"] = context.trace_id
            logger.info("waiting %s s before greeting %s", inputs.wait, inputs.name)
            self.wait_poll(inputs.wait)
            return
        context.outputs["greeting"] = "hello " + inputs.name
        context.outputs["polls"] = context.invoke_count
