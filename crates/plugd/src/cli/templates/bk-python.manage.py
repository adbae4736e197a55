#!/usr/bin/env python3
"""The Python framework's command entry (its runtime's Django settings); plugd does not use it."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bk_plugin_runtime.settings")
    os.environ.setdefault("BK_APP_CONFIG_PATH", "bk_plugin_runtime.config")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
