"""Greets: prints the greeting, appends MESSAGE=... to $CI_ENV_FILE (the plugin's outputs) and reports it."""
import argparse
import os

from qciplugin import report_output

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--greeting", default="hello")
parser.add_argument("--shout", default="false")
args = parser.parse_args()

message = "%s, %s" % (args.greeting, args.name)
if args.shout == "true":
    message = message.upper() + "!"
print(message)
with open(os.environ["CI_ENV_FILE"], "a") as outputs:
    outputs.write("MESSAGE=%s\n" % message)
report_output({"title": "Greeting", "description": message})
