"""Logging sinks: JSON lines on disk (with rotation) and batched rows in the ``logs`` table."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from async_store import SqlConfig, SqlService
from async_store.logsinks import JsonlSink, SqlLogSink
from tests.conftest import on_sqlite
from tests.test_backup import transaction_held, wait_until

_names = itertools.count()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of the test's own (not the root), emptied of handlers afterwards."""
    log = logging.getLogger(f"tests.logsinks.{next(_names)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


@pytest.fixture
async def sql(tmp_path: Path) -> AsyncIterator[SqlService]:
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as service:
        yield service


def read_jsonl(*paths: Path) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            records.append(json.loads(line))
    return records


async def logged_messages(sql: SqlService, logger: logging.Logger) -> list[str]:
    rows = await sql.app.fetch_all(
        "SELECT message FROM logs WHERE logger = ? ORDER BY id", (logger.name,)
    )
    return [row[0] for row in rows]


# -- JSONL -----------------------------------------------------------------------------------


def test_jsonl_writes_one_object_per_record(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "logs" / "app.jsonl"  # the folder is created
    sink = JsonlSink(path)
    logger.addHandler(sink)

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    logger.info("hello %s", "world", extra={"user": "ana", "n": 3, "thing": Opaque()})
    logger.warning("plain")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    logger.removeHandler(sink)
    sink.close()

    first, second, third = read_jsonl(path)
    assert first["level"] == "INFO"
    assert first["logger"] == logger.name
    assert first["message"] == "hello world"
    assert first["extra"] == {"user": "ana", "n": 3, "thing": "<opaque>"}
    assert first["time"].endswith("+00:00")
    assert second == {k: second[k] for k in ("time", "level", "logger", "message")}
    assert second["level"] == "WARNING"
    assert third["level"] == "ERROR"
    assert "ValueError: boom" in third["exception"]


def test_jsonl_rotates_by_size_and_loses_nothing(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "app.jsonl"
    sink = JsonlSink(path, max_bytes=2_000, backup_count=1_000)
    logger.addHandler(sink)
    for i in range(300):
        logger.info("record %04d", i, extra={"padding": "x" * 40})
    logger.removeHandler(sink)
    sink.close()

    rotated = sorted(tmp_path.glob("app.jsonl.*"), key=lambda p: int(p.suffix[1:]))
    assert len(rotated) >= 10
    assert all(p.stat().st_size <= 2_000 for p in [path, *rotated])
    # Oldest file first: app.jsonl.N ... app.jsonl.1, then app.jsonl.
    records = read_jsonl(*reversed(rotated), path)
    assert [r["message"] for r in records] == [f"record {i:04d}" for i in range(300)]


def test_jsonl_close_writes_everything_queued(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "app.jsonl"
    sink = JsonlSink(path)
    logger.addHandler(sink)
    for i in range(1000):
        logger.debug("record %d", i)
    logger.removeHandler(sink)
    sink.close()
    sink.close()  # idempotent
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1000
    assert json.loads(lines[-1])["message"] == "record 999"


def test_jsonl_takes_records_from_several_threads(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "app.jsonl"
    sink = JsonlSink(path)
    logger.addHandler(sink)

    def emit(thread: int) -> None:
        for i in range(200):
            logger.info("t%d-%d", thread, i)

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.removeHandler(sink)
    sink.close()
    messages = [r["message"] for r in read_jsonl(path)]
    assert sorted(messages) == sorted(f"t{t}-{i}" for t in range(4) for i in range(200))


# -- SQL -------------------------------------------------------------------------------------


async def test_sql_sink_buffers_off_the_callers_path_and_aclose_writes_it_all(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=1_000, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)
    transactions = sql.app.statistics().transactions
    for i in range(10):
        logger.info("record %d", i, extra={"i": i})  # a plain call: nothing awaited
    # Nothing was written on the callers' path: no transaction ran, no row is there yet.
    assert sql.app.statistics().transactions == transactions
    assert sink.written == 0
    assert await logged_messages(sql, logger) == []

    await sink.aclose()
    logger.removeHandler(sink)
    assert await logged_messages(sql, logger) == [f"record {i}" for i in range(10)]
    rows = await sql.app.fetch_all(
        "SELECT level, extra FROM logs WHERE logger = ? ORDER BY id", (logger.name,)
    )
    assert [(row[0], json.loads(row[1])) for row in rows] == [("INFO", {"i": i}) for i in range(10)]
    assert sink.dropped == 0


async def test_sql_sink_writes_full_batches_in_one_transaction_each(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=20, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)
    transactions = sql.app.statistics().transactions
    for i in range(50):
        logger.info("record %d", i)
    try:
        await wait_until(lambda: sink.written >= 50)
        assert sql.app.statistics().transactions - transactions == 3  # 20 + 20 + 10
        assert await logged_messages(sql, logger) == [f"record {i}" for i in range(50)]
    finally:
        await sink.aclose()
        logger.removeHandler(sink)


async def test_sql_sink_flushes_a_partial_batch_after_the_interval(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=1_000, flush_interval=0.05)
    await sink.start()
    logger.addHandler(sink)
    for i in range(5):
        logger.info("record %d", i)
    try:
        await wait_until(lambda: sink.written >= 5)
        assert await logged_messages(sql, logger) == [f"record {i}" for i in range(5)]
    finally:
        await sink.aclose()
        logger.removeHandler(sink)


async def test_sql_sink_loses_nothing_of_1000_records_on_aclose(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app)
    await sink.start()
    logger.addHandler(sink)
    for i in range(1000):
        logger.info("record %d", i)
    await sink.aclose()
    logger.removeHandler(sink)
    assert await logged_messages(sql, logger) == [f"record {i}" for i in range(1000)]
    assert sink.dropped == 0


async def test_sql_sink_takes_records_from_another_thread(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=50, flush_interval=0.05)
    await sink.start()
    logger.addHandler(sink)

    def emit() -> None:
        for i in range(200):
            logger.info("from a thread %d", i)

    await asyncio.to_thread(emit)
    # Written by the task (woken from the other thread, or by the interval), not by aclose():
    # wait for all of it (closing mid-write is the case of the test below).
    await wait_until(lambda: sink.written >= 200)
    await sink.aclose()
    logger.removeHandler(sink)
    assert await logged_messages(sql, logger) == [f"from a thread {i}" for i in range(200)]


async def test_sql_sink_overflow_drops_the_oldest_and_counts_them(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=1_000, flush_interval=60, max_buffered=10)
    await sink.start()
    logger.addHandler(sink)
    for i in range(25):
        logger.info("record %d", i)
    assert sink.dropped == 15
    await sink.aclose()
    logger.removeHandler(sink)
    assert await logged_messages(sql, logger) == [f"record {i}" for i in range(15, 25)]
    assert sink.written == 10


async def test_sql_sink_aclose_loses_nothing_while_the_writer_is_busy(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=50, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)
    async with transaction_held(sql.app):
        for i in range(100):
            logger.info("record %d", i)
        # The sink's batch is queued behind the transaction.
        await wait_until(lambda: sql.app.statistics().writer_queue_depth > 0, interval=0)
        closing = asyncio.create_task(sink.aclose())
        await asyncio.sleep(0)
    await closing
    logger.removeHandler(sink)
    assert await logged_messages(sql, logger) == [f"record {i}" for i in range(100)]
    assert (sink.written, sink.dropped) == (100, 0)


# -- closing without aclose(), and failing writes ---------------------------------------------


def log_records(logger: logging.Logger, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        logger.info("record %d", i)


def expected(count: int, start: int = 0) -> list[str]:
    return [f"record {i}" for i in range(start, start + count)]


async def test_sql_sink_logging_shutdown_from_another_thread_writes_everything(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=1_000, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)
    log_records(logger, 100)
    # What an atexit hook or a shutdown thread does: logging.shutdown() holds the handler's
    # lock and calls close(); the loop writes meanwhile.
    await asyncio.to_thread(logging.shutdown, [weakref.ref(sink)])
    assert await logged_messages(sql, logger) == expected(100)
    assert (sink.written, sink.dropped) == (100, 0)
    await sink.aclose()  # idempotent after close()
    logger.removeHandler(sink)


async def test_sql_sink_close_on_the_loop_thread_leaves_the_writing_to_a_task(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=1_000, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)
    log_records(logger, 100)
    # What dictConfig() called from a coroutine does: close() on the loop's own thread. It
    # must not block the loop; the records are written right after.
    logging.shutdown([weakref.ref(sink)])
    log_records(logger, 5, start=100)  # logged while the close is under way: kept too
    await wait_until(lambda: sink.written >= 105)
    await sink.aclose()
    logger.removeHandler(sink)
    assert await logged_messages(sql, logger) == expected(105)
    assert sink.dropped == 0


async def test_sql_sink_closed_after_the_service_writes_through_a_connection_of_its_own(
    tmp_path: Path, logger: logging.Logger
) -> None:
    service = SqlService(SqlConfig.in_directory(tmp_path / "data"))
    await service.start()
    sink = SqlLogSink(service.app, batch_size=1_000, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)
    log_records(logger, 40)
    await service.close()  # the wrong order, but a common one
    await sink.aclose()
    logger.removeHandler(sink)
    assert (sink.written, sink.dropped) == (40, 0)
    assert read_logs(tmp_path / "data" / "app_meta.db", logger) == expected(40)


def read_logs(path: Path, logger: logging.Logger) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT message FROM logs WHERE logger = ? ORDER BY id", (logger.name,)
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def test_sql_sink_closed_by_logging_shutdown_after_the_loop_ended(
    tmp_path: Path, logger: logging.Logger
) -> None:
    async def run_the_application() -> SqlLogSink:
        async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as service:
            sink = SqlLogSink(service.app, batch_size=1_000, flush_interval=60)
            await sink.start()
            logger.addHandler(sink)
            log_records(logger, 60)
        return sink  # the service is closed and the loop ends: the sink task is cancelled

    sink = asyncio.run(run_the_application())
    log_records(logger, 3, start=60)  # after the loop: buffered, written at close
    # What the interpreter runs at exit.
    logging.shutdown([weakref.ref(sink)])
    logger.removeHandler(sink)
    assert (sink.written, sink.dropped) == (63, 0)
    assert read_logs(tmp_path / "data" / "app_meta.db", logger) == expected(63)


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock (as another process would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.fixture
async def impatient(tmp_path: Path) -> AsyncIterator[SqlService]:
    """A service that gives up on a locked database in a few tens of milliseconds."""
    config = SqlConfig.in_directory(
        tmp_path / "data", busy_timeout=0.02, busy_retries=1, busy_backoff=0.01
    )
    async with SqlService(config) as service:
        yield service


async def test_sql_sink_a_failed_write_loses_nothing_once_the_database_recovers(
    impatient: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(impatient.app, batch_size=10, flush_interval=0.02)
    await sink.start()
    logger.addHandler(sink)
    try:
        with write_lock_held(impatient.app.path):
            log_records(logger, 30)
            await wait_until(lambda: sink.last_error is not None)
            log_records(logger, 20, start=30)
            await asyncio.sleep(0.1)  # a few more failed attempts
            assert sink.written == 0
        await wait_until(lambda: sink.written >= 50)
        assert sink.last_error is None
    finally:
        await sink.aclose()
        logger.removeHandler(sink)
    assert await logged_messages(impatient, logger) == expected(50)
    assert sink.dropped == 0


async def test_sql_sink_keeps_at_most_max_buffered_while_writes_fail(
    impatient: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(impatient.app, batch_size=10, flush_interval=0.02, max_buffered=20)
    await sink.start()
    logger.addHandler(sink)
    try:
        with write_lock_held(impatient.app.path):
            log_records(logger, 10)
            await wait_until(lambda: sink.last_error is not None)
            for i in range(10, 200, 10):
                log_records(logger, 10, start=i)
                await asyncio.sleep(0.01)
                assert len(sink._buffer) <= 20
        await wait_until(lambda: sink.written + sink.dropped >= 200)
    finally:
        await sink.aclose()
        logger.removeHandler(sink)
    messages = await logged_messages(impatient, logger)
    assert sink.written + sink.dropped == 200
    # The first batch failed and stayed in flight, tried again before anything behind it;
    # of the buffer, the newest max_buffered records are kept (older ones were dropped, oldest
    # first).
    assert messages == expected(10) + expected(20, start=180)
    assert sink.written == 30


async def test_sql_sink_says_so_when_it_cannot_write_at_close(
    impatient: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(impatient.app, batch_size=1_000, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)
    log_records(logger, 7)
    with (
        write_lock_held(impatient.app.path),
        pytest.warns(RuntimeWarning, match="7 log record.* could not be written"),
    ):
        await sink.aclose()
    assert (sink.written, sink.dropped) == (0, 7)
    log_records(logger, 1)  # after close: counted, not kept
    logger.removeHandler(sink)
    assert sink.dropped == 8
    assert await logged_messages(impatient, logger) == []


# -- cancellation, a loop that stops mid-write, logging's lock -----------------------------------


async def test_sql_sink_aclose_under_a_deadline_raises_and_the_close_still_completes(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=50, flush_interval=60)
    await sink.start()
    logger.addHandler(sink)

    async def close_within_a_deadline() -> None:
        async with asyncio.timeout(0):
            await sink.aclose()

    async with transaction_held(sql.app):
        log_records(logger, 100)
        await wait_until(lambda: sql.app.statistics().writer_queue_depth > 0, interval=0)
        closing = asyncio.create_task(close_within_a_deadline())
        # The writer is released only once the deadline has cancelled the close: the timeout
        # must be raised all the same, not swallowed once the sink's task has finished writing.
        await wait_until(lambda: closing.cancelling() > 0 or closing.done(), interval=0)
    async with asyncio.timeout(30):
        with pytest.raises(TimeoutError):
            await closing
        # The close went on without its caller; aclose() waits for it to end.
        await sink.aclose()
    logger.removeHandler(sink)
    assert await logged_messages(sql, logger) == expected(100)
    assert (sink.written, sink.dropped) == (100, 0)


class _StoppedLoop:
    """A service and a sink on an event loop run by hand, which the test stops (without
    closing it) while a batch is in flight, then resumes to finish."""

    def __init__(self, tmp_path: Path, logger: logging.Logger) -> None:
        self.loop = asyncio.new_event_loop()
        self.path = tmp_path / "data" / "app_meta.db"
        self.service = SqlService(SqlConfig.in_directory(tmp_path / "data"))
        self.loop.run_until_complete(self.service.start())
        self.sink = SqlLogSink(self.service.app, batch_size=100, flush_interval=60)
        self.loop.run_until_complete(self.sink.start())
        logger.addHandler(self.sink)

    def finish(self, *pending: asyncio.Future[Any]) -> None:
        async def close() -> None:
            async with asyncio.timeout(30):
                for future in pending:
                    await future
                await self.sink.aclose()
                await self.service.close()

        self.loop.run_until_complete(close())

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def stopped_loop(tmp_path: Path, logger: logging.Logger) -> Iterator[_StoppedLoop]:
    harness = _StoppedLoop(tmp_path, logger)
    try:
        yield harness
    finally:
        harness.close()


def test_sql_sink_close_after_the_loop_stopped_writes_a_batch_still_queued_once(
    stopped_loop: _StoppedLoop, logger: logging.Logger
) -> None:
    app, sink = stopped_loop.service.app, stopped_loop.sink
    entered, gate = threading.Event(), threading.Event()

    def hold_the_writers_thread(conn: sqlite3.Connection) -> None:
        entered.set()
        gate.wait()

    async def queue_a_batch() -> asyncio.Task[None]:
        held = asyncio.create_task(on_sqlite(app).run_on_writer(hold_the_writers_thread))
        await wait_until(entered.is_set)
        log_records(logger, 1000)
        # The sink's first batch of 100 is queued behind the job holding the writer.
        await wait_until(lambda: app.statistics().writer_queue_depth > 0, interval=0)
        return held

    held = stopped_loop.loop.run_until_complete(queue_a_batch())  # the loop stops here
    gate.set()
    sink.close()  # what logging.shutdown() at exit does
    assert read_logs(stopped_loop.path, logger) == expected(1000)
    assert (sink.written, sink.dropped) == (1000, 0)
    # The loop runs again: the writer reaches the queued batch, which is not written twice.
    stopped_loop.finish(held)
    logger.removeHandler(sink)
    assert read_logs(stopped_loop.path, logger) == expected(1000)
    assert (sink.written, sink.dropped) == (1000, 0)


def test_sql_sink_close_after_the_loop_stopped_counts_a_batch_committed_meanwhile(
    stopped_loop: _StoppedLoop, logger: logging.Logger
) -> None:
    loop, app, sink = stopped_loop.loop, stopped_loop.service.app, stopped_loop.sink
    stopped = threading.Event()

    def stop_the_loop_before_committing(statement: str) -> None:
        # On the writer's thread, inside the sink's first batch: the loop stops, and the
        # batch commits only then, its result left for a loop that no longer runs.
        if statement.startswith("INSERT INTO logs") and not stopped.is_set():
            loop.call_soon_threadsafe(loop.stop)
            stopped.wait()

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(stop_the_loop_before_committing)

    loop.run_until_complete(on_sqlite(app).run_on_writer(trace))
    log_records(logger, 1000)
    loop.run_forever()  # until the writer's thread stops it
    stopped.set()
    sink.close()
    assert read_logs(stopped_loop.path, logger) == expected(1000)
    assert (sink.written, sink.dropped) == (1000, 0)
    stopped_loop.finish()
    logger.removeHandler(sink)
    assert read_logs(stopped_loop.path, logger) == expected(1000)
    assert (sink.written, sink.dropped) == (1000, 0)


async def test_sql_sink_close_from_a_thread_holding_loggings_lock_leaves_the_loop_free(
    sql: SqlService, logger: logging.Logger
) -> None:
    sink = SqlLogSink(sql.app, batch_size=1_000, flush_interval=60, close_timeout=1)
    await sink.start()
    logger.addHandler(sink)
    log_records(logger, 100)
    module_lock: threading.RLock = logging._lock  # type: ignore[attr-defined]
    holding = threading.Event()
    failures: list[BaseException] = []

    def reconfigure() -> None:
        # What logging.config.dictConfig() does: it closes the handlers it replaces while it
        # holds logging's module lock.
        try:
            with module_lock:
                holding.set()
                logging.shutdown([weakref.ref(sink)])
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=reconfigure)
    thread.start()
    await asyncio.to_thread(holding.wait, 30)
    # Meanwhile the loop needs that lock too (as getLogger() does, or a logger's first record
    # at a level): it waits for the other thread, which must not wait for the loop.
    logging.getLogger(f"{logger.name}.child")
    await asyncio.to_thread(thread.join, 30)
    async with asyncio.timeout(30):
        await sink.aclose()
    logger.removeHandler(sink)
    assert failures == []
    assert await logged_messages(sql, logger) == expected(100)
    assert (sink.written, sink.dropped) == (100, 0)
