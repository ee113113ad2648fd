"""Command-line entry points, each a thin layer over the library: ``mrl-train``, ``mrl-eval``, ``mrl-embed``,
``mrl-mine``, ``mrl-search``, ``mrl-index``, ``mrl-export``, ``mrl-report``, ``mrl-prepare`` and ``mrl-dashboard``
(also ``python -m mrl.cli.<module>`` and the Makefile's targets of the same names)."""
