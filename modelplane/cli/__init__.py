"""The ``modelplane`` command."""
