"""Fake upstream providers on loopback, for provider tests. Not the real services.

Each fake is an aiohttp server (127.0.0.1, port 0) that speaks one provider's wire
protocol with response shapes recorded from the real API: Anthropic's Messages API and
its named SSE events, Bedrock's Converse with SigV4 checking and binary event-stream
frames, Vertex AI's Gemini ``generateContent`` (SSE with CRLF separators) and
``predict``, Ollama's NDJSON API, and Azure OpenAI's door (``api-key``,
``api-version``) in front of a real server. Every request is recorded in ``received``;
a test picks the answer by setting ``scenario``.
"""

from tests.providers.fakes.anthropic import FakeAnthropic
from tests.providers.fakes.azure import FakeAzureFront
from tests.providers.fakes.base import Fake, Received
from tests.providers.fakes.bedrock import FakeBedrock
from tests.providers.fakes.ollama import OLLAMA_PULL, FakeOllama
from tests.providers.fakes.vertex import FakeVertex

__all__ = [
    "OLLAMA_PULL",
    "Fake",
    "FakeAnthropic",
    "FakeAzureFront",
    "FakeBedrock",
    "FakeOllama",
    "FakeVertex",
    "Received",
]
