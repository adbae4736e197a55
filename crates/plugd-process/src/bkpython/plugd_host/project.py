"""Importing a bk-plugin project, as the framework does when it starts: importing a version module is
what registers its plugin classes (bk_plugin_framework.kit.plugin._HUB)."""

import importlib
import os
import pkgutil
import sys


def import_project(project):
    """Imports every module of bk_plugin/versions (names not starting with '_') and bk_plugin.meta."""
    sys.path.insert(1, project)
    os.chdir(project)
    versions = importlib.import_module("bk_plugin.versions")
    for info in pkgutil.walk_packages(versions.__path__, "bk_plugin.versions."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        importlib.import_module(info.name)
    meta = importlib.import_module("bk_plugin.meta")
    from bk_plugin_framework.kit.plugin import _HUB

    return meta, _HUB
