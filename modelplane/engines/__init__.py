"""Engines run a model inside one process; every engine is served by the same HTTP server."""
