"""Sub-commands of the ``landscape`` command line (see :mod:`landscape.cli`)."""
