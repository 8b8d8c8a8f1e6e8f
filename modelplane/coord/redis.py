"""The shared backend: Redis (or anything speaking its protocol), so limits, cache and
invalidations span every server process.

Keys live under one prefix (``mp:`` by default): ``<prefix>cache:<key>`` (values as
given, expiring with ``PX``), ``<prefix>rate:<key>`` (a hash: window length, window
index, current and previous totals), ``<prefix>gauge:<key>`` (a sorted set of slot
tokens scored by expiry) and ``<prefix>total:<key>`` (an integer); pub/sub channels are
``<prefix><channel>``. Counters, gauges and totals change in Lua scripts, atomically,
on the Redis clock (``TIME``), so processes on machines whose clocks disagree still
share windows and expiries.

Every Redis or socket error is translated here into :class:`CoordError`, whose message
names the server without its password.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import window as sliding
from .base import CoordError, Slot, Window

_INCR = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local n = math.floor(now / w)
local elapsed = now - n * w
local s = redis.call('HMGET', KEYS[1], 'w', 'n', 'c', 'p')
local sw, sn = tonumber(s[1]), tonumber(s[2])
local c, p = 0, 0
if sw == w and sn == n then
  c, p = tonumber(s[3]), tonumber(s[4])
elseif sw == w and sn == n - 1 then
  p = tonumber(s[3])
end
local allowed = 1
if limit >= 0 and p * (w - elapsed) / w + c + amount > limit then
  allowed = 0
else
  c = math.max(0, c + amount)
end
redis.call('HSET', KEYS[1], 'w', w, 'n', n, 'c', c, 'p', p)
redis.call('PEXPIRE', KEYS[1], (n + 2) * w - now)
return {c, p, elapsed, allowed}
"""

_INCR_MANY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
local n = math.floor(now / w)
local elapsed = now - n * w
local cs, ps, fits = {}, {}, {}
local all = 1
for i, key in ipairs(KEYS) do
  local amount, limit = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local s = redis.call('HMGET', key, 'w', 'n', 'c', 'p')
  local sw, sn = tonumber(s[1]), tonumber(s[2])
  local c, p = 0, 0
  if sw == w and sn == n then
    c, p = tonumber(s[3]), tonumber(s[4])
  elseif sw == w and sn == n - 1 then
    p = tonumber(s[3])
  end
  fits[i] = 1
  if limit >= 0 and p * (w - elapsed) / w + c + amount > limit then
    fits[i] = 0
    all = 0
  end
  cs[i], ps[i] = c, p
end
local out = {elapsed}
for i, key in ipairs(KEYS) do
  if all == 1 then
    cs[i] = math.max(0, cs[i] + tonumber(ARGV[2 * i]))
  end
  redis.call('HSET', key, 'w', w, 'n', n, 'c', cs[i], 'p', ps[i])
  redis.call('PEXPIRE', key, (n + 2) * w - now)
  table.insert(out, cs[i])
  table.insert(out, ps[i])
  table.insert(out, fits[i])
end
return out
"""

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"""

_ADD = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return total
"""

_SEED = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
"""

_POLL_S = 30.0
"""A subscription waits this long per read before it checks its connection again."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _Errors:
    """Turns Redis and socket errors into :class:`CoordError` naming the server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._secret = parts.password or ""
        if parts.scheme == "unix":
            self.server = f"unix://{parts.path}"
        else:
            try:
                port = parts.port or 6379
            except ValueError:
                port = 6379
            self.server = f"{parts.scheme}://{parts.hostname or 'localhost'}:{port}{parts.path}"

    def error(self, what: str, exc: BaseException) -> CoordError:
        detail = str(exc) or type(exc).__name__
        if self._secret:
            detail = detail.replace(self._secret, "***")
        return CoordError(
            f"Redis at {self.server} failed to {what} ({detail}); check that it is running, "
            "reachable from this machine and that the coordination URL and its password "
            "are right"
        )

    @contextmanager
    def translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise self.error(what, exc) from exc


class RedisCache:
    def __init__(
        self, client: aioredis.Redis, errors: _Errors, prefix: str, max_entry_bytes: int
    ) -> None:
        self._client = client
        self._errors = errors
        self._prefix = f"{prefix}cache:"
        self.max_entry_bytes = max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        with self._errors.translate("read the cache"):
            value = await self._client.get(self._prefix + key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._errors.translate("write the cache"):
            if ttl_s <= 0 or len(value) > self.max_entry_bytes:
                await self._client.delete(self._prefix + key)
            else:
                await self._client.set(self._prefix + key, value, px=_ms(ttl_s))

    async def delete(self, key: str) -> None:
        with self._errors.translate("delete from the cache"):
            await self._client.delete(self._prefix + key)


class RedisCounters:
    def __init__(self, client: aioredis.Redis, errors: _Errors, prefix: str) -> None:
        self._client = client
        self._errors = errors
        self._rate = f"{prefix}rate:"
        self._gauge = f"{prefix}gauge:"
        self._total = f"{prefix}total:"
        self._incr = client.register_script(_INCR)
        self._incr_many = client.register_script(_INCR_MANY)
        self._acquire = client.register_script(_ACQUIRE)
        self._add = client.register_script(_ADD)
        self._seed = client.register_script(_SEED)

    async def incr(
        self, key: str, amount: int, window_s: float, *, limit: int | None = None
    ) -> Window:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        w = _ms(window_s)
        args = [w, amount, -1 if limit is None else limit]
        with self._errors.translate("count"):
            current, previous, elapsed, allowed = await self._incr(
                keys=[self._rate + key], args=args
            )
        got = sliding.result(
            int(previous), int(current), int(elapsed), w, amount, limit, bool(allowed)
        )
        return Window(got.count, got.reset_s / 1000, got.allowed, got.retry_after_s / 1000)

    async def incr_many(
        self,
        keys: Sequence[str],
        amounts: Sequence[int],
        window_s: float,
        limits: Sequence[int | None],
    ) -> list[Window]:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        if not keys:
            return []
        w = _ms(window_s)
        args: list[int] = [w]
        for amount, limit in zip(amounts, limits, strict=True):
            args += [amount, -1 if limit is None else limit]
        with self._errors.translate("count"):
            got = await self._incr_many(keys=[self._rate + k for k in keys], args=args)
        elapsed = int(got[0])
        out = []
        for i, (amount, limit) in enumerate(zip(amounts, limits, strict=True)):
            current, previous, fits = got[1 + 3 * i : 4 + 3 * i]
            one = sliding.result(int(previous), int(current), elapsed, w, amount, limit, bool(fits))
            out.append(Window(one.count, one.reset_s / 1000, one.allowed, one.retry_after_s / 1000))
        return out

    async def acquire(self, key: str, limit: int, *, ttl_s: float = 600.0) -> Slot | None:
        token = secrets.token_hex(8)
        with self._errors.translate("take a concurrency slot"):
            got = await self._acquire(keys=[self._gauge + key], args=[limit, _ms(ttl_s), token])
        return Slot(key, token) if got else None

    async def release(self, slot: Slot) -> None:
        with self._errors.translate("release a concurrency slot"):
            await self._client.zrem(self._gauge + slot.key, slot.token)

    async def add(self, key: str, amount: int, *, ttl_s: float) -> int:
        with self._errors.translate("add to a total"):
            return int(await self._add(keys=[self._total + key], args=[amount, _ms(ttl_s)]))

    async def seed(self, key: str, value: int, *, ttl_s: float) -> int:
        with self._errors.translate("seed a total"):
            return int(await self._seed(keys=[self._total + key], args=[value, _ms(ttl_s)]))

    async def totals(self, keys: Sequence[str]) -> list[int | None]:
        if not keys:
            return []
        with self._errors.translate("read totals"):
            values = await self._client.mget([self._total + key for key in keys])
        return [None if v is None else int(v) for v in values]


class RedisSubscription:
    def __init__(self, owner: RedisPubSub, pubsub: Any, channel: str) -> None:
        self._owner = owner
        self._pubsub = pubsub
        self._channel = channel
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        while not self._closed:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_POLL_S
                )
            except Exception as exc:
                if self._closed:  # closed under a waiting reader
                    break
                if isinstance(exc, RedisError | OSError):
                    raise self._owner.errors.error("receive a message", exc) from exc
                raise
            if message is not None and message["type"] == "message":
                return bytes(message["data"])
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner.subscriptions.discard(self)
        with suppress(RedisError, OSError):  # the connection is dropped either way
            await self._pubsub.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class RedisPubSub:
    def __init__(self, client: aioredis.Redis, errors: _Errors, prefix: str) -> None:
        self._client = client
        self.errors = errors
        self._prefix = prefix
        self.subscriptions: set[RedisSubscription] = set()

    async def publish(self, channel: str, message: bytes) -> None:
        with self.errors.translate("publish"):
            await self._client.publish(self._prefix + channel, message)

    async def subscribe(self, channel: str) -> RedisSubscription:
        pubsub: Any = self._client.pubsub()  # redis-py leaves PubSub.aclose untyped
        try:
            with self.errors.translate("subscribe"):
                await pubsub.subscribe(self._prefix + channel)
        except BaseException:
            await pubsub.aclose()
            raise
        sub = RedisSubscription(self, pubsub, channel)
        self.subscriptions.add(sub)
        return sub


class RedisCoord:
    """One connection pool to the server at ``url`` (``redis://``, ``rediss://`` for
    TLS, ``unix://``); commands give up after ``timeout_s``."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "mp:",
        cache_max_entry_bytes: int = 1 << 20,
        timeout_s: float = 2.0,
    ) -> None:
        self._errors = _Errors(url)
        with self._errors.translate("open a connection pool"):
            try:
                self._client = aioredis.Redis.from_url(
                    url,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=timeout_s,
                    health_check_interval=_POLL_S,
                )
            except ValueError as exc:
                raise self._errors.error("parse its URL", exc) from None
        self._cache = RedisCache(self._client, self._errors, prefix, cache_max_entry_bytes)
        self._counters = RedisCounters(self._client, self._errors, prefix)
        self._pubsub = RedisPubSub(self._client, self._errors, prefix)
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, cache_max_bytes: int, cache_max_entry_bytes: int
    ) -> RedisCoord:
        """For :func:`~modelplane.coord.create`; Redis bounds its memory itself
        (``maxmemory``), so ``cache_max_bytes`` does not apply."""
        return cls(url, prefix=prefix, cache_max_entry_bytes=cache_max_entry_bytes)

    @property
    def cache(self) -> RedisCache:
        return self._cache

    @property
    def counters(self) -> RedisCounters:
        return self._counters

    @property
    def pubsub(self) -> RedisPubSub:
        return self._pubsub

    async def ping(self) -> None:
        with self._errors.translate("answer a ping"):
            await self._client.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._pubsub.subscriptions):
            await sub.aclose()
        await self._client.aclose()
