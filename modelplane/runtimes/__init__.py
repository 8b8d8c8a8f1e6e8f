"""Where replicas run: ``local`` subprocesses today, found by name in the registry."""
