"""LlamaCppEngine: a GGUF model served by llama.cpp on the scheduler's thread."""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from modelplane.engines.base import (
    Capabilities,
    Delta,
    GenerateRequest,
    SamplingParams,
    TokenLogprob,
)
from modelplane.engines.bundled import BUNDLED
from modelplane.engines.llamacpp.batched import BatchedDecoder
from modelplane.engines.llamacpp.options import LlamaCppOptions
from modelplane.engines.llamacpp.weights import converted, resolve_source
from modelplane.engines.scheduler import Scheduler, Sequence
from modelplane.engines.text import TextStream
from modelplane.errors import InvalidRequest


@contextlib.contextmanager
def _model_params(**fields: object) -> Iterator[None]:
    """Load-time model parameters that ``Llama()`` has no argument for: it builds them
    from ``llama_model_default_params()``, so that is wrapped while one model loads (in
    the replica's own process, on the scheduler's thread, before any other load)."""
    import llama_cpp.llama_cpp as low  # what ``Llama()`` calls it through

    default = low.llama_model_default_params

    def params() -> Any:
        p = default()
        for name, value in fields.items():
            setattr(p, name, value)
        return p

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = default


class LlamaCppEngine:
    """A GGUF model (a bundled one by name, or a file by path); options are
    ``LlamaCppOptions``."""

    def __init__(self, model: str, **options: Any) -> None:
        opts = LlamaCppOptions.for_model(model, options)
        self.model_id = model if model in BUNDLED else Path(model).stem
        self.source = model
        self.options = opts
        self.n_threads = opts.n_threads or os.cpu_count() or 1
        self.n_ctx = opts.n_ctx
        self.cache_dir = Path(opts.cache_dir or Path.home() / ".modelplane" / "weights")
        self.capabilities = Capabilities(
            chat=True, completions=True, logprobs=True, response_format=True, max_context=self.n_ctx
        )
        self._executor = _LlamaExecutor(self)
        self._scheduler = Scheduler(
            self._executor,
            max_queue=opts.max_queue,
            name="llamacpp",
            stall_after_s=opts.stall_timeout_s,
        )

    async def start(self) -> None:
        await self._scheduler.start()

    async def close(self) -> None:
        await self._scheduler.close()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        seq = self._scheduler.submit(request)
        async for delta in seq.deltas():
            yield delta

    def health(self) -> dict[str, Any]:
        return {
            **self._scheduler.health(),
            "model": self.model_id,
            "max_batch": self.options.max_batch,
        }


class _LlamaExecutor:
    """Owned by the scheduler thread. With ``max_batch`` 1 it runs one sequence at a
    time to completion through llama-cpp-python's ``generate`` (which reuses the KV
    cache across requests sharing a prefix); above 1, ``BatchedDecoder`` advances up to
    ``max_batch`` sequences together, a token each per step."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self._e = engine
        self.max_batch = engine.options.max_batch
        self._llm: Any = None
        self._formatter: Any = None
        self._vocab: Any = None
        self._batched: BatchedDecoder | None = None

    def load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        e = self._e
        if e.options.nice and hasattr(os, "nice"):
            # Decoding keeps every core busy; the request path (this process's event
            # loop, the gateway, the client) needs a core for a moment per token. At a
            # lower priority the decode threads (this one and the OpenMP workers it
            # spawns, which inherit it) yield the CPU at once when those wake, instead
            # of after a scheduler tick, which is what costs latency.
            os.nice(e.options.nice)
        path = converted(resolve_source(e.source), e.options.weights, e.cache_dir)
        with _model_params(use_extra_bufts=e.options.extra_buffers):
            llm = Llama(
                model_path=str(path),
                # Batched decoding has a context of its own; this one then only tokenizes.
                n_ctx=e.n_ctx if self.max_batch == 1 else 64,
                n_threads=e.n_threads,
                n_threads_batch=e.n_threads,
                verbose=False,
            )
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            eos, bos = llm.token_eos(), llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        self._vocab = llm._model.vocab
        self._llm = llm
        if self.max_batch > 1:
            self._batched = BatchedDecoder(self, self.max_batch)
            self._batched.open(llm, e.n_ctx, e.n_threads)

    def _is_eog(self, tok: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, tok))

    def unload(self) -> None:
        if self._batched is not None:
            self._batched.close()
            self._batched = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def step(self, active: list[Sequence]) -> list[Sequence]:
        if self._batched is not None:
            return self._batched.step(active)
        for seq in active:
            self._run(seq)
        return list(active)

    def _prompt_tokens(self, req: GenerateRequest) -> list[int]:
        llm = self._llm
        if req.kind == "completion":
            return list(llm.tokenize(req.prompt.encode(), add_bos=True, special=False))
        if self._formatter is None:
            raise InvalidRequest(
                "this model has no chat template; use /v1/completions", param="messages"
            )
        messages = list(req.messages)
        system = self._e.options.default_system_prompt
        if system is not None and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        try:
            rendered = self._formatter(messages=messages)
        except Exception as exc:  # jinja errors from a template that rejects the input
            raise InvalidRequest(
                f"the chat template rejected the messages: {exc}", param="messages"
            ) from None
        return list(
            llm.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True)
        )

    def _grammar(self, fmt: dict[str, Any] | None) -> Any:
        if not fmt or fmt.get("type") in (None, "text"):
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if fmt["type"] == "json_object":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is None:
            raise InvalidRequest(
                "response_format.json_schema.schema is required", param="response_format"
            )
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:
            raise InvalidRequest(
                f"unsupported JSON schema: {exc}", param="response_format"
            ) from None

    def prepare(self, req: GenerateRequest) -> tuple[list[int], int]:
        """The prompt's tokens (never none) and how many may be generated after them
        (both executors); a prompt that fills the context is a 400."""
        tokens = self._prompt_tokens(req) or self._empty_prompt(req)
        room = self._e.n_ctx - len(tokens)
        if room <= 0:
            raise InvalidRequest(
                f"the prompt is {len(tokens)} tokens, more than this model's context of "
                f"{self._e.n_ctx}; shorten it",
                param="messages" if req.kind == "chat" else "prompt",
                code="context_length_exceeded",
            )
        return tokens, min(req.params.max_tokens or room, room)

    def _empty_prompt(self, req: GenerateRequest) -> list[int]:
        """What a prompt of no tokens is decoded from: without a token there are no
        logits to sample the first one from (the batched decoder waited forever for a
        prompt token to decode, a wedged slot; the other executor failed).

        OpenAI answers an empty completion prompt ("if a prompt is not specified the
        model will generate as if from the beginning of a new document"), and
        llama-cpp-python's server seeded one with the start token, so that is done here
        rather than refusing it as vLLM does: OpenAI clients expect it to work. A model
        with no start token begins after its end-of-sequence token, as OpenAI's models
        begin after the ``<|endoftext|>`` document separator."""
        llm = self._llm
        for tok in (llm.token_bos(), llm.token_eos()):
            if tok != -1:
                return [int(tok)]
        raise InvalidRequest(
            "the prompt is empty after tokenization and this model has no start token "
            "to generate from; send a non-empty prompt",
            param="messages" if req.kind == "chat" else "prompt",
            code="empty_prompt",
        )

    def sampling(self, p: SamplingParams) -> tuple[float, float, int]:
        """Temperature, top-p and seed: the request's, else the endpoint's defaults."""
        o = self._e.options
        return (
            o.temperature if p.temperature is None else p.temperature,
            o.top_p if p.top_p is None else p.top_p,
            p.seed if p.seed is not None else random.getrandbits(31),
        )

    def _run(self, seq: Sequence) -> None:
        llm, o, p = self._llm, self._e.options, seq.request.params
        if seq.cancelled:  # its client left while it waited: nothing to decode for
            return
        tokens, limit = self.prepare(seq.request)
        grammar = self._grammar(p.response_format)
        temp, top_p, seed = self.sampling(p)
        llm.set_seed(seed)
        text = TextStream(p.stop)
        n = 0
        finish: Any = "length"
        gen = llm.generate(
            tokens,
            top_k=o.top_k,
            top_p=top_p,
            min_p=o.min_p,
            temp=temp,
            repeat_penalty=o.repeat_penalty,
            frequency_penalty=o.frequency_penalty
            if p.frequency_penalty is None
            else p.frequency_penalty,
            presence_penalty=p.presence_penalty,
            grammar=grammar,
        )
        try:
            for tok in gen:
                seq.beat()
                if seq.cancelled:
                    finish = "stop"
                    break
                if self._is_eog(tok):
                    finish = "stop"
                    break
                n += 1
                piece = llm.detokenize([tok])
                lps = [self._logprob(tok, piece, p.top_logprobs)] if p.logprobs else []
                out = text.feed(piece)
                if out or lps:
                    seq.emit(Delta(text=out, logprobs=lps))
                if text.stopped:
                    finish = "stop"
                    break
                if n >= limit:
                    break
        finally:
            gen.close()
        seq.emit(
            Delta(
                text=text.flush(),
                finish_reason=finish,
                prompt_tokens=len(tokens),
                completion_tokens=n,
            )
        )

    def _logprob(self, tok: int, piece: bytes, top: int) -> TokenLogprob:
        import llama_cpp
        import numpy as np

        llm = self._llm
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)
        return self._to_logprob(logits, tok, piece, top)

    def _to_logprob(self, logits: Any, tok: int, piece: bytes, top: int) -> TokenLogprob:
        import numpy as np

        llm = self._llm
        m = logits.max()
        logp = logits - m - np.log(np.exp(logits - m).sum())
        best: tuple[tuple[str, float, tuple[int, ...]], ...] = ()
        if top:
            idx = np.argpartition(-logp, top)[:top]
            idx = idx[np.argsort(-logp[idx])]
            best = tuple(
                (b.decode(errors="replace"), float(logp[i]), tuple(b))
                for i in idx
                for b in (llm.detokenize([int(i)]),)
            )
        return TokenLogprob(piece.decode(errors="replace"), float(logp[tok]), tuple(piece), best)
