"""A plugd process plugin: polls a few times, reports, then greets."""
from plugd_plugin import invocation

inv = invocation()
name = inv.inputs["name"]
polls = inv.inputs.get("polls", 2)
done = inv.storage.get("done", 0)
if done < polls:
    inv.storage["done"] = done + 1
    print(f"poll {done + 1} of {polls}")
    inv.poll(0.2)
inv.report(title="Greeting", description=f"greeted {name} after {polls} polls")
inv.success(message=f"hello, {name}", polls=polls)
