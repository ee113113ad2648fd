"""Command-line entry points, each a thin layer over the library: ``mrl-train``, ``mrl-eval``, ``mrl-embed``,
``mrl-search``, ``mrl-export`` and ``mrl-report`` (also ``python -m mrl.cli.<command>`` and the Makefile)."""
