#!/bin/sh
# A plugd process plugin (protocol v1, see plugd's docs/process-protocol.md).
# Inputs arrive as PLUGD_INPUT_<NAME> variables (and as one JSON invocation on stdin).
# Outputs are KEY=VALUE lines appended to $PLUGD_OUTPUT_FILE; exit code 0 means SUCCESS.
set -eu
echo "greeting ${PLUGD_INPUT_NAME}"
echo "message=hello, ${PLUGD_INPUT_NAME}" >> "$PLUGD_OUTPUT_FILE"
