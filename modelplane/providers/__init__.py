"""Upstreams the gateway sends OpenAI-shaped requests to, one adapter per wire protocol."""
