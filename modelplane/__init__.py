"""modelplane: a self-hostable LLM serving platform with one OpenAI-compatible API."""

__version__ = "0.1.0"
