"""The bodies of ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``,
for the OpenAPI document only.

``server/fastpath.py`` forwards request bodies as bytes and never validates them against
these models: they tell clients what they may send and what they get back. Like the
gateway, they accept fields they do not name (engines and providers add their own, and
check the values).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageUrl(_Open):
    url: str
    """An ``https://`` URL, or the image itself as a ``data:image/…;base64,…`` URL."""
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Open):
    """An image, for models that take images."""

    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_Open):
    data: str
    """The audio, base64-encoded."""
    format: Literal["wav", "mp3"]


class AudioPart(_Open):
    """Audio, for models that take audio."""

    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImagePart | AudioPart, Field(discriminator="type")]


class SystemMessage(_Open):
    """Instructions for the model (``developer`` is OpenAI's newer name for ``system``)."""

    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Open):
    role: Literal["user"]
    content: str | list[ContentPart]
    """Text, or a list of parts (text, images, audio)."""
    name: str | None = None


class FunctionCall(_Open):
    name: str
    arguments: str
    """The arguments as a JSON string, as the model wrote them: check them before use."""


class ToolCall(_Open):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Open):
    """An earlier answer of the model, to continue a conversation."""

    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class ToolMessage(_Open):
    """The result of a tool call the model asked for."""

    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str
    """The ``id`` of the tool call this answers."""


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """The arguments, as a JSON Schema object."""
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Open):
    name: str


class NamedToolChoice(_Open):
    """Make the model call this function."""

    type: Literal["function"]
    function: NamedFunction


class TextFormat(_Open):
    type: Literal["text"]


class JsonObjectFormat(_Open):
    """Any JSON object."""

    type: Literal["json_object"]


class JsonSchema(_Open):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    """The JSON Schema the answer must match."""
    strict: bool | None = None


class JsonSchemaFormat(_Open):
    """JSON matching a schema (where the engine supports it)."""

    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(_Open):
    include_usage: bool | None = None
    """``true``: one last chunk, with no choices, carries the usage of the whole request."""


class _Generation(_Open):
    """What chat and text completions share."""

    model: str
    """A model name, as ``GET /v1/models`` lists it (a route or an endpoint)."""
    stream: bool = False
    """``true``: the answer comes as server-sent events (``text/event-stream``), a chunk
    at a time, ending with ``data: [DONE]``."""
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    """The most tokens to generate."""
    temperature: float | None = None
    """Sampling temperature, usually 0 to 2: higher is more random."""
    top_p: float | None = None
    """Nucleus sampling: only the tokens making up this probability mass."""
    n: int | None = None
    """How many answers to generate."""
    stop: str | list[str] | None = None
    """Up to 4 sequences where generation stops (not included in the answer)."""
    seed: int | None = None
    """For repeatable sampling, where the engine supports it."""
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    """Token id → bias added to its logit."""
    user: str | None = None
    """The end user, for the provider's abuse monitoring and for routes with sticky
    sessions by user."""


class ChatCompletionRequest(_Generation):
    """The body of ``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    """The conversation so far, oldest first."""
    max_completion_tokens: int | None = None
    """OpenAI's newer name for ``max_tokens``."""
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(_Generation):
    """The body of ``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    """Text, several texts, or tokens (a list of token ids, or several)."""
    suffix: str | None = None
    echo: bool | None = None
    """``true``: the answer starts with the prompt."""
    logprobs: int | None = None
    """Log probabilities of this many most likely tokens at each position."""
    best_of: int | None = None


class EmbeddingRequest(_Open):
    """The body of ``POST /v1/embeddings``."""

    model: str
    """A model name, as ``GET /v1/models`` lists it (a route or an endpoint)."""
    input: str | list[str] | list[int] | list[list[int]]
    """Text, several texts, or tokens (a list of token ids, or several)."""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    """Fewer dimensions than the model's, where the model supports it."""
    user: str | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(_Open):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class ChatChoice(_Open):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(_Open):
    """A whole answer (``stream`` false)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    """Unix time, seconds."""
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class FunctionCallDelta(_Open):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Open):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class Delta(_Open):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None


class ChunkChoice(_Open):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Open):
    """One server-sent event of a streamed chat completion (``stream`` true)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    """Only in the last chunk, with ``stream_options.include_usage``."""


class CompletionChoice(_Open):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: dict[str, Any] | None = None


class Completion(_Open):
    """A text completion: the whole answer, or one server-sent event of a stream."""

    id: str
    object: Literal["text_completion"]
    created: int
    """Unix time, seconds."""
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Embedding(_Open):
    object: Literal["embedding"]
    index: int
    """The position of its input."""
    embedding: list[float] | str
    """The vector, or with ``encoding_format: base64`` its little-endian float32 values
    in base64."""


class EmbeddingUsage(_Open):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Open):
    object: Literal["list"]
    data: list[Embedding]
    """One embedding per input, in the order of the inputs."""
    model: str
    usage: EmbeddingUsage


class Model(_Open):
    """One model a caller may use: an endpoint, route or alias name."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Open):
    """``GET /v1/models``: every model name this caller may use."""

    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(_Open):
    message: str
    """What went wrong and what to do next, for a person to read."""
    type: str
    """``invalid_request_error``, ``authentication_error``, ``rate_limit_error``, …"""
    param: str | None
    """The request field at fault, if one is."""
    code: str | None
    """A stable code for programs: ``model_not_found``, ``rate_limit_exceeded``, …"""


class ErrorEnvelope(_Open):
    """OpenAI's error body, which its SDKs turn into exceptions."""

    error: ErrorDetail
