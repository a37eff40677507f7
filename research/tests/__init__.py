"""Unit tests of the research diagnostics (run by ``make test`` through pytest's ``testpaths``)."""
