"""One pure function per check: plain data in (metrics dict, texts, thresholds), a
:class:`~diagnostics.results.CheckResult` out. No file I/O, no pytest."""
