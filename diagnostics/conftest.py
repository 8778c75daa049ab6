"""Loads the diagnostics plugin for ``pytest diagnostics`` (as an initial conftest, so its
command-line options exist before arguments are parsed). There is deliberately no pytest11
entry point: the unit tests in ``tests/`` must not load this plugin. The star import brings in
every public hook and fixture of the plugin; a fixture added there needs nothing here."""

from diagnostics.plugin import *  # noqa: F403
