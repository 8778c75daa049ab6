"""Loads the diagnostics plugin for ``pytest diagnostics`` (as an initial conftest, so its
command-line options exist before arguments are parsed). There is deliberately no pytest11
entry point: the unit tests in ``tests/`` must not load this plugin."""

from diagnostics.plugin import *  # noqa: F403  (hooks and fixtures, listed in plugin.__all__)
