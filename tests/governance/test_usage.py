"""Usage records: the batched recorder's semantics; and, end to end on SQLite and
PostgreSQL, totals that equal what clients were told, failures mixed in, nothing lost at
shutdown and nothing counted twice."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from modelplane.config import Settings
from modelplane.governance.usage import UsageRecorder
from modelplane.store.db import Database
from modelplane.store.governance import WRITE_CHUNK, UsageRepo
from modelplane.store.records import Usage
from tests.gateway.accounts import chat_body, make_key, usage_records
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server


def _usage(i: int) -> Usage:
    return Usage(
        f"id-{i}",
        datetime.now(UTC),
        f"req-{i}",
        None,
        None,
        "r",
        "e",
        200,
        i,
        1,
        0.0,
        1.0,
        False,
        False,
    )


class Flaky(UsageRepo):
    """The real repository, failing its first ``failures`` writes."""

    def __init__(self, db: Database, failures: int) -> None:
        super().__init__(db)
        self.failures = failures

    async def add_many(self, records: Sequence[Usage]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("database unreachable")
        await super().add_many(records)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'u.db'}").sqlalchemy_url)
    await database.migrate()
    yield database
    await database.close()


async def _settle(outcomes: list[int]) -> list[Usage]:
    return [_usage(outcome) for outcome in outcomes]


async def test_the_recorder_batches_retries_and_drains_at_close(db: Database) -> None:
    repo = Flaky(db, failures=2)
    recorder = UsageRecorder(repo, _settle, flush_interval_s=0.05, batch_max=10, queue_max=100)
    await recorder.start()
    for i in range(25):
        assert recorder.submit(i)
    await asyncio.sleep(0.01)
    assert recorder.written < 25  # two failed writes: the records wait, with backoff
    for i in range(25, 30):
        recorder.submit(i)
    await recorder.close()  # writes what is left before returning
    stored = await UsageRepo(db).all()
    assert sorted(r.id for r in stored) == sorted(f"id-{i}" for i in range(30))
    assert recorder.dropped == 0
    # A batch written twice (a retry after a lost answer) is stored once.
    await UsageRepo(db).add_many([_usage(1), _usage(2), _usage(99)])
    assert len(await UsageRepo(db).all()) == 31


async def test_a_batch_of_several_chunks_is_written_whole_or_not_at_all(db: Database) -> None:
    n = 2 * WRITE_CHUNK + 7
    await UsageRepo(db).add_many([_usage(i) for i in range(n)])
    stored = await UsageRepo(db).all()
    assert sorted(r.prompt_tokens for r in stored) == list(range(n))
    # A record refused by the database in the last chunk: the earlier chunks of the
    # same batch are not stored either (one transaction), so a retry duplicates nothing.
    broken = [_usage(i) for i in range(n, 2 * n)]
    broken[-1] = dataclasses.replace(broken[-1], status=None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="NOT NULL"):
        await UsageRepo(db).add_many(broken)
    assert len(await UsageRepo(db).all()) == n


async def test_a_full_queue_drops_and_counts_instead_of_waiting(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    repo = Flaky(db, failures=1000)
    recorder = UsageRecorder(repo, _settle, flush_interval_s=0.01, queue_max=5)
    await recorder.start()
    accepted = [recorder.submit(i) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3 and recorder.dropped == 3
    assert "usage records dropped" in caplog.text
    recorder.close_timeout_s = 0.2
    await recorder.close()  # gives up at its deadline, saying what it could not write
    assert "unwritten" in caplog.text


@pytest.fixture
def fake() -> Any:
    up = FakeUpstream("up")
    yield up
    up.close()


def test_usage_totals_equal_what_clients_were_told(
    tmp_path: Path, database_url: str, fake: FakeUpstream
) -> None:
    server = Server(tmp_path / "home", database_url).start()
    try:
        server.add_external("up", fake.base_url)
        # 170 requests a minute: of the 200 below, some are refused at the gateway.
        key = make_key(server, limits={"rpm": 170})
        client = server.openai(key.secret)
        told: list[tuple[str, int, int, int]] = []  # request id, status, prompt, completion
        lock = threading.Lock()

        def one(i: int) -> None:
            prompt, tokens = i % 7 + 1, i % 13 + 1
            words = f"prompt={prompt} tokens={tokens}"
            kind = i % 10
            try:
                if kind in (5, 6):
                    raw = client.chat.completions.with_raw_response.create(
                        **chat_body(words, stream=True, stream_options={"include_usage": True})
                    )
                    last = list(raw.parse())[-1]
                    assert last.usage is not None
                    got = (raw.status_code, last.usage.prompt_tokens, last.usage.completion_tokens)
                else:
                    mode = {7: " mode=500", 8: " mode=bad_request", 9: " mode=429"}.get(kind, "")
                    raw = client.chat.completions.with_raw_response.create(
                        **chat_body(words + mode)
                    )
                    usage = raw.parse().usage
                    assert usage is not None
                    got = (raw.status_code, usage.prompt_tokens, usage.completion_tokens)
                rid = raw.headers["x-request-id"]
            except openai.APIStatusError as exc:
                rid, got = exc.response.headers["x-request-id"], (exc.status_code, 0, 0)
            with lock:
                told.append((rid, *got))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(200)))
        server.stop()  # at once: what is still queued is written on the way out
    finally:
        server.close()

    records = usage_records(database_url)
    assert len(told) == 200
    assert sorted(r.request_id for r in records) == sorted(t[0] for t in told)
    assert sum(r.prompt_tokens for r in records) == sum(t[2] for t in told)
    assert sum(r.completion_tokens for r in records) == sum(t[3] for t in told)
    statuses = sorted(t[1] for t in told)
    assert sorted(r.status for r in records) == statuses
    assert {400, 429, 500} <= set(statuses) and statuses.count(200) >= 100
    assert not any(r.estimated for r in records)
