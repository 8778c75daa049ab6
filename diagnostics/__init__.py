"""bankllm diagnostics: measure a trained run against the claims of the training chapter.

Layout (deepchecks spirit): ``analyses/`` holds one pure function per check (plain data in,
:class:`~diagnostics.results.CheckResult` out); ``test_*.py`` are the pytest checks that feed
them a run through the fixtures of ``plugin.py``; ``report.py`` renders and writes the report.
Run with ``pytest diagnostics --run runs/<name>``; definitions in the design doc
``diagnostics.md``.
"""
