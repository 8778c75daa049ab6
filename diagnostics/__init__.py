"""bankllm diagnostics: measure a trained run against the claims of the training chapter.

Layout (deepchecks spirit): each ``analyses/<check>.py`` declares one check (name, thresholds,
a pure analysis: plain data in, :class:`~diagnostics.results.CheckResult` out), found by
``registry.py``; verdicts come from the one rule of ``decision.py``; ``test_<check>.py`` are the
pytest checks that feed them a run through the fixtures of ``plugin.py``; ``report.py`` renders
and writes the report. Run with ``pytest diagnostics --run runs/<name>``; definitions in
``docs/diagnostics.md``; how to add a check in ``CONTRIBUTING.md``.
"""
