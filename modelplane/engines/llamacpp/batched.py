"""Batched decoding: several sequences advance together, one ``llama_decode`` a step.

Each active sequence owns a slot (a llama.cpp sequence id) in one context with a KV
cache of ``n_ctx`` tokens per slot, and its own sampler chain (penalties, grammar,
top-k/top-p/min-p, temperature and seed), so requests sample exactly as they would
alone. A step decodes the newest token of every running sequence plus, for sequences
that just arrived, their prompt (in chunks of ``n_batch``), then samples each
sequence from its own logits. The scheduler calls ``step`` in a loop and admits new
sequences between steps, so a long answer no longer holds a short one back.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L

from modelplane.engines.base import Delta, TokenLogprob
from modelplane.engines.scheduler import Sequence
from modelplane.engines.text import TextStream
from modelplane.errors import InvalidRequest

N_BATCH = 512
PENALTY_LAST_N = 64


@dataclass
class _Slot:
    seq: Sequence
    sid: int
    prompt: list[int]
    limit: int
    sampler: Any
    text: TextStream
    fed: int = 0
    """Prompt tokens already in the KV cache."""
    cached: list[int] = field(default_factory=list)
    """Every token in this slot's KV cache, in order."""
    pos: int = 0
    generated: int = 0
    last: int = -1
    logits_at: int = -1
    finish: str = "length"
    done: bool = False
    pending: list[Delta] = field(default_factory=list)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class BatchedDecoder:
    """Owns the batch context; used only from the scheduler's thread."""

    def __init__(self, executor: Any, max_batch: int) -> None:
        self.x = executor
        self.max_batch = max_batch
        self._ctx: Any = None
        self._batch: Any = None
        self._slots: dict[int, _Slot] = {}
        self._history: dict[int, list[int]] = {}
        """What a free slot's KV cache still holds, for the next prompt to reuse."""

    def open(self, llm: Any, n_ctx: int, n_threads: int) -> None:
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx * self.max_batch
        params.n_batch = N_BATCH
        params.n_ubatch = N_BATCH
        params.n_seq_max = self.max_batch
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = True
        self._ctx = L.llama_init_from_model(llm._model.model, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create the batch context")
        self._batch = L.llama_batch_init(N_BATCH, 0, 1)
        self._mem = L.llama_get_memory(self._ctx)
        self._vocab = llm._model.vocab
        self._llm = llm

    def close(self) -> None:
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            L.llama_free(self._ctx)
            self._ctx = None
        for slot in self._slots.values():
            L.llama_sampler_free(slot.sampler)
        self._slots.clear()

    def _sampler(self, seq: Sequence) -> Any:
        o, p = self.x._e.options, seq.request.params
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            L.llama_sampler_chain_add(chain, sampler)

        # Called as llama-cpp-python's own sampler does, so both executors sample
        # alike: in 0.3.36 the binding declares five arguments where llama.cpp takes
        # four, and its first (n_vocab) lands in llama.cpp's penalty_last_n: the
        # penalties then cover every token so far, which is what the bundled model's
        # defaults were measured with.
        add(
            L.llama_sampler_init_penalties(
                self._llm.n_vocab(),
                PENALTY_LAST_N,
                o.repeat_penalty,
                o.frequency_penalty if p.frequency_penalty is None else p.frequency_penalty,
                p.presence_penalty,
            )
        )
        grammar = self.x._grammar(p.response_format)
        if grammar is not None:
            add(
                L.llama_sampler_init_grammar(
                    self._vocab, grammar._grammar.encode(), grammar._root.encode()
                )
            )
        temp, top_p, seed = self.x.sampling(p)
        if temp == 0:
            add(L.llama_sampler_init_greedy())
        else:
            add(L.llama_sampler_init_top_k(o.top_k))
            add(L.llama_sampler_init_top_p(top_p, 1))
            add(L.llama_sampler_init_min_p(o.min_p, 1))
            add(L.llama_sampler_init_temp(temp))
            add(L.llama_sampler_init_dist(seed))
        return chain

    def _admit(self, seq: Sequence) -> None:
        tokens, limit = self.x.prepare(seq.request)
        # Reuse the free slot whose cache shares the longest prefix with this prompt
        # (a conversation's next turn, a common system prompt), keep that much.
        free = set(range(self.max_batch)) - {s.sid for s in self._slots.values()}
        reuse = {sid: _common(self._history.get(sid, []), tokens) for sid in free}
        sid = max(sorted(free), key=lambda k: reuse[k])
        keep = min(reuse[sid], len(tokens) - 1)  # the last prompt token must be decoded
        L.llama_memory_seq_rm(self._mem, sid, keep, -1)
        self._slots[id(seq)] = _Slot(
            seq,
            sid,
            tokens,
            limit,
            self._sampler(seq),
            TextStream(seq.request.params.stop),
            fed=keep,
            cached=tokens[:keep],
            pos=keep,
        )

    def step(self, active: list[Sequence]) -> list[Sequence]:
        finished: list[Sequence] = []
        # Slots of sequences the scheduler no longer holds (it failed them after an
        # error in an earlier step) are freed, or they would fill the batch for good.
        live = {id(seq) for seq in active}
        for key in [k for k in self._slots if k not in live]:
            slot = self._slots.pop(key)
            L.llama_sampler_free(slot.sampler)
            self._history.pop(slot.sid, None)  # its cache may differ from that now
        for seq in active:
            if id(seq) not in self._slots:
                if seq.cancelled:  # its client left before it started
                    finished.append(seq)
                    continue
                try:
                    self._admit(seq)
                except InvalidRequest as exc:
                    seq.fail(exc)
                    finished.append(seq)
        b = self._batch
        n = 0
        order: list[_Slot] = []
        for slot in self._slots.values():
            if slot.seq.cancelled:
                slot.finish, slot.done = "stop", True
                continue
            if slot.fed < len(slot.prompt):
                chunk = slot.prompt[slot.fed : slot.fed + (N_BATCH - n)]
                for j, tok in enumerate(chunk):
                    self._put(n, tok, slot.pos + j, slot.sid, False)
                    n += 1
                slot.fed += len(chunk)
                slot.cached.extend(chunk)
                slot.pos += len(chunk)
                if slot.fed == len(slot.prompt):
                    b.logits[n - 1] = 1
                    slot.logits_at = n - 1
                    order.append(slot)
            elif n < N_BATCH:
                self._put(n, slot.last, slot.pos, slot.sid, True)
                slot.cached.append(slot.last)
                slot.pos += 1
                slot.logits_at = n
                order.append(slot)
                n += 1
            if n >= N_BATCH:
                break
        if not n and not any(slot.done for slot in self._slots.values()) and self._slots:
            # A step must decode a token or end a sequence; one that does neither would
            # be repeated forever by the scheduler at full CPU.
            raise RuntimeError("a batched step advanced no sequence")
        if n:
            b.n_tokens = n
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc})")
            for slot in order:
                self._sample(slot)
        for key, slot in list(self._slots.items()):
            if slot.done:
                slot.seq.emit(
                    Delta(
                        text=slot.text.flush(),
                        finish_reason=slot.finish,  # type: ignore[arg-type]
                        prompt_tokens=len(slot.prompt),
                        completion_tokens=slot.generated,
                    )
                )
                L.llama_sampler_free(slot.sampler)
                self._history[slot.sid] = slot.cached
                del self._slots[key]
                finished.append(slot.seq)
        return finished

    def _put(self, i: int, tok: int, pos: int, sid: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = tok
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = sid
        b.logits[i] = 1 if logits else 0

    def _sample(self, slot: _Slot) -> None:
        tok = L.llama_sampler_sample(slot.sampler, self._ctx, slot.logits_at)
        if L.llama_vocab_is_eog(self._vocab, tok):
            slot.finish, slot.done = "stop", True
            return
        slot.generated += 1
        slot.last = tok
        piece = self._llm.detokenize([tok])
        p = slot.seq.request.params
        lps = [self._logprob(slot.logits_at, tok, piece, p.top_logprobs)] if p.logprobs else []
        out = slot.text.feed(piece)
        if out or lps:
            slot.seq.emit(Delta(text=out, logprobs=lps))
        if slot.text.stopped:
            slot.finish, slot.done = "stop", True
        elif slot.generated >= slot.limit:
            slot.finish, slot.done = "length", True

    def _logprob(self, i: int, tok: int, piece: bytes, top: int) -> TokenLogprob:
        import numpy as np

        ptr = L.llama_get_logits_ith(self._ctx, i)
        n_vocab = self._llm.n_vocab()
        logits = np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
        ).astype(np.float64)
        result: TokenLogprob = self.x._to_logprob(logits, tok, piece, top)
        return result
