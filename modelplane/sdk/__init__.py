"""A small Python client for modelplane's control API (and a streaming chat helper).

For inference, any OpenAI SDK works against ``<base_url>/v1``; this client covers
what OpenAI's does not: endpoints and keys.
"""

from modelplane.sdk.client import Client, ModelplaneAPIError

__all__ = ["Client", "ModelplaneAPIError"]
