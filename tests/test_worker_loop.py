"""One worker's loop against a real Redis queue: what each finished job tells its waiters,
when compactions run beside renders, and how the worker stops.

The engine, cache and compactor are stand-ins that record what they were asked, so each test
can force the outcome it names; ``tests/test_worker.py`` runs the real ones in a process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from cache import CacheKey, ImageDeleted
from config.logs import REQUEST_ID
from render.compaction import CompactionRetry
from render.images import ImageNotFound
from render.queue import (
    GROUP,
    Entry,
    JobId,
    JobQueue,
    Outcome,
    RenderJob,
    compaction_job,
    compaction_stream,
)
from tests.support.servers import RedisServer
from tests.support.waiting import until
from tests.test_worker_claims import held_by
from worker.consumer import READ_BLOCK_MS, Worker

CLAIM_IDLE_SECONDS = 0.3
JOB_ID = r"\S+/\d+-\d+"  # a shard, then its entry id
STORE = object()  # the object store each worker hands its engine


def job(name: str, seconds_left: float = 60) -> RenderJob:
    """A render job queued by the request ``name``."""
    key = CacheKey(f"{name:0<22}", "bicubic", "png")
    return RenderJob(key, time.time() + seconds_left, request_id=name)


class WorkerLines(logging.Handler):
    """The worker's log lines, each with the request id it was logged under."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((REQUEST_ID.get(), record.getMessage()))

    def of(self, request_id: str | None, pattern: str) -> bool:
        return any(rid == request_id and re.fullmatch(pattern, m) for rid, m in self.lines)


@pytest.fixture
def worker_lines() -> Iterator[WorkerLines]:
    logger = logging.getLogger("worker.consumer")
    handler, level = WorkerLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def jobs_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("srstore_worker_jobs_total", {"outcome": outcome}) or 0.0


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None
    return value


@dataclass
class Engine:
    """Renders ``rendered:<id>``; an id in ``failures`` raises its exception instead; while
    ``release`` is unset every render waits on it."""

    failures: dict[str, Exception] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    rendered: list[str] = field(default_factory=list)
    stores: list[object] = field(default_factory=list)  # what each render read from
    holding: int = 0

    def __post_init__(self) -> None:
        self.release.set()

    async def render_object(self, store: object, key: CacheKey) -> bytes:
        self.stores.append(store)
        self.holding += 1
        try:
            await self.release.wait()
        finally:
            self.holding -= 1
        if key.image_id in self.failures:
            raise self.failures[key.image_id]
        self.rendered.append(key.image_id)
        return f"rendered:{key.image_id}".encode()


class GatedEngine(Engine):
    """Each job's render waits on its own gate, named by the request that queued it."""

    def __init__(self, gates: dict[str, asyncio.Event]) -> None:
        super().__init__()
        self.gates = gates
        self.started: set[str] = set()

    async def render_object(self, store: object, key: CacheKey) -> bytes:
        name = key.image_id.rstrip("0")
        self.started.add(name)
        await self.gates[name].wait()
        return await super().render_object(store, key)


@dataclass
class Cache:
    """Holds what is put; ids in ``deleted`` refuse a put as a delete that overtook it."""

    entries: dict[CacheKey, bytes] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    async def get(self, key: CacheKey) -> bytes | None:
        return self.entries.get(key)

    async def put(self, key: CacheKey, data: bytes) -> None:
        if key.image_id in self.deleted:
            raise ImageDeleted(key.image_id)
        self.entries[key] = data


@dataclass
class Compactor:
    """Answers each call with the next of ``answers`` for its id (an exception is raised);
    while ``release`` is unset every call waits on it."""

    answers: dict[str, list[str | Exception]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # what each call scores with
    holding: int = 0
    most_held: int = 0

    def __post_init__(self) -> None:
        self.release.set()

    async def compact(self, image_id: str, model: str) -> str:
        self.calls.append(image_id)
        self.models.append(model)
        self.holding += 1
        self.most_held = max(self.most_held, self.holding)
        try:
            await self.release.wait()
        finally:
            self.holding -= 1
        answers = self.answers.get(image_id, [])
        answer = answers.pop(0) if answers else "done"
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class Setup:
    client: aioredis.Redis
    renders: JobQueue
    compactions: JobQueue
    outcomes: dict[str, dict[str, str | None]]  # by job key, as the waiters read them

    async def pending(self, queue: JobQueue) -> int:
        summary = await self.client.xpending(queue.shards[0], GROUP)
        return int(summary["pending"])

    async def stale(self, queue: JobQueue, consumer: str) -> bool:
        """Whether every job ``consumer`` holds has gone unrenewed past the claim idle time."""
        held = await held_by(self.client, queue, consumer)
        return all(int(job["time_since_delivered"]) > CLAIM_IDLE_SECONDS * 1000 for job in held)

    async def settled(self) -> bool:
        """Every job of both streams acknowledged and dropped."""
        return await self.renders.depth() == 0 and await self.compactions.depth() == 0

    def worker(
        self, engine: Engine, cache: Cache, compactor: Compactor, **options: float
    ) -> Worker:
        return Worker(
            f"worker-{uuid.uuid4().hex[:6]}",
            self.renders,
            engine,  # type: ignore[arg-type]
            STORE,  # type: ignore[arg-type]
            cache,  # type: ignore[arg-type]
            concurrency=int(options.get("concurrency", 4)),
            claim_idle_seconds=options.get("claim_idle_seconds", CLAIM_IDLE_SECONDS),
            compactions=self.compactions,
            compactor=compactor,  # type: ignore[arg-type]
            compaction_slots=int(options.get("compaction_slots", 1)),
        )


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[Setup]:
    """Fresh render and compaction streams, and a listener on what finished jobs publish."""
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    stream = f"srstore:render:{uuid.uuid4().hex[:8]}"
    renders = JobQueue(client, stream, 64)
    compactions = JobQueue(client, compaction_stream(stream), 64)
    outcomes: dict[str, dict[str, str | None]] = {}
    pubsub = client.pubsub()
    await pubsub.psubscribe(renders.done_pattern, compactions.done_pattern)

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                key = message["channel"].rsplit(":done:", 1)[1]
                outcomes[key] = json.loads(message["data"])

    listener = asyncio.create_task(listen())
    yield Setup(client, renders, compactions, outcomes)
    listener.cancel()
    await pubsub.aclose()
    await client.aclose()


async def running(worker: Worker) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: gauge("srstore_worker_up") == 1, "the worker taking jobs")
    return stop, task


async def stopped(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


def counts(outcomes: list[str]) -> dict[str, float]:
    return {outcome: jobs_counted(outcome) for outcome in outcomes}


async def test_each_finished_job_tells_its_waiters_what_became_of_it(
    setup: Setup, worker_lines: WorkerLines
) -> None:
    """And the worker logs each under the id of the request that queued it."""
    rendered, cached, expired = job("rendered"), job("cached"), job("expired", seconds_left=-1)
    missing, broken, overtaken = job("missing"), job("broken"), job("overtaken")
    engine = Engine(
        failures={
            missing.key.image_id: ImageNotFound("gone"),
            broken.key.image_id: ValueError("bad"),
        }
    )
    cache = Cache(entries={cached.key: b"from before"}, deleted={overtaken.key.image_id})
    results = {
        rendered: "rendered",
        cached: "cached",
        expired: "expired",
        missing: "failed",
        broken: "failed",
        overtaken: "failed",
    }
    before = counts(["rendered", "cached", "expired", "failed"])
    for each in results:
        await setup.renders.enqueue(each)
    stop, task = await running(setup.worker(engine, cache, Compactor()))

    def logged(each: RenderJob) -> bool:
        line = rf"job {JOB_ID} for {re.escape(str(each.key))}: {results[each]} in \d+ ms"
        return worker_lines.of(each.request_id, line)

    await until(lambda: all(map(logged, results)), "a line for each finished job")
    await until(lambda: len(setup.outcomes) == len(results), "every outcome heard")
    after = counts(["rendered", "cached", "expired", "failed"])
    await stopped(stop, task)

    assert {each.request_id: setup.outcomes[str(each.key)] for each in results} == {
        "rendered": {"code": None, "message": ""},
        "cached": {"code": None, "message": ""},
        "expired": {"code": "expired", "message": "the job's deadline passed"},
        "missing": {"code": "not_found", "message": "gone"},
        "broken": {"code": "render_failed", "message": "bad"},
        "overtaken": {"code": "not_found", "message": overtaken.key.image_id},
    }
    assert worker_lines.of("broken", rf"job {JOB_ID} for {re.escape(str(broken.key))} failed: bad")
    assert engine.rendered == [rendered.key.image_id, overtaken.key.image_id]
    assert engine.stores == [STORE] * 4  # missing and broken were rendered too, and failed
    assert cache.entries[rendered.key] == f"rendered:{rendered.key.image_id}".encode()
    assert cache.entries[cached.key] == b"from before"
    assert overtaken.key not in cache.entries
    assert {k: after[k] - before[k] for k in after} == {
        "rendered": 1,
        "cached": 1,
        "expired": 1,
        "failed": 3,
    }
    assert await setup.settled()
    assert await setup.pending(setup.renders) == 0


async def test_a_compaction_waits_while_a_render_is_running_and_runs_once_none_is(
    setup: Setup,
) -> None:
    setup.renders = renders = CountingQueue(setup.client, setup.renders.stream, 64)
    engine, compactor = Engine(), Compactor()
    engine.release.clear()
    await setup.renders.enqueue(job("render"))
    stop, task = await running(setup.worker(engine, Cache(), compactor))
    await until(lambda: engine.holding == 1, "the render reaching the engine")
    await setup.compactions.enqueue(compaction_job("compactme", "bicubic"))

    await turns(renders, 3)
    held_back = list(compactor.calls)
    engine.release.set()
    await until(lambda: compactor.calls == ["compactme"], "the compaction once the render ended")
    await until(setup.settled, "both jobs acknowledged")
    await stopped(stop, task)

    assert held_back == []
    assert await setup.pending(setup.compactions) == 0


class CountingQueue(JobQueue):
    """Counts the worker's reads: one a turn of its loop (see ``Worker._take_jobs``)."""

    reads = 0

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        self.reads += 1
        return await super().read(consumer, count, block_ms)


async def turns(queue: CountingQueue, count: int) -> None:
    """Until the worker has read ``count`` more times, each followed by its compactions' turn."""
    target = queue.reads + count
    await until(lambda: queue.reads >= target, f"{count} turns of the worker's loop")


@pytest.mark.parametrize("orphans", [0, 1])
async def test_a_worker_compacts_no_more_images_at_once_than_its_compaction_slots(
    setup: Setup, orphans: int
) -> None:
    """Counting a dead worker's compaction it adopts, and over turns of its loop."""
    setup.renders = renders = CountingQueue(setup.client, setup.renders.stream, 64)
    await setup.compactions.ensure_group()
    compactor = Compactor()
    compactor.release.clear()
    for name in ("one", "two", "three", "four")[: 3 + orphans]:
        await setup.compactions.enqueue(compaction_job(name, "bicubic"))
    if orphans:
        assert len(await setup.compactions.read("dead-worker", 1, None)) == 1
        await until(lambda: setup.stale(setup.compactions, "dead-worker"), "its claim stale")
    stop, task = await running(setup.worker(Engine(), Cache(), compactor, compaction_slots=2))

    await until(lambda: compactor.holding == 2, "two compactions in hand")
    await turns(renders, 3)
    held = (compactor.holding, await setup.pending(setup.compactions) - orphans)
    compactor.release.set()
    await until(lambda: len(compactor.calls) == 3 + orphans, "the rest once slots freed")
    await until(setup.settled, "every compaction acknowledged")
    await stopped(stop, task)

    assert held == (2, 2 - orphans)
    assert compactor.most_held == 2


async def test_a_compaction_queued_between_claim_sweeps_is_read_at_the_next_turn(
    setup: Setup,
) -> None:
    """Claim sweeps run at most twice a claim period: the turns between them read anyway."""
    setup.renders = renders = CountingQueue(setup.client, setup.renders.stream, 64)
    compactor = Compactor()
    stop, task = await running(setup.worker(Engine(), Cache(), compactor, claim_idle_seconds=60))
    await turns(renders, 1)

    await setup.compactions.enqueue(compaction_job("later", "bicubic"))
    await until(setup.settled, "the compaction finished")
    await stopped(stop, task)

    assert compactor.calls == ["later"]


async def test_each_compaction_outcome_is_acknowledged_except_one_another_holds(
    setup: Setup, worker_lines: WorkerLines
) -> None:
    """``busy`` leaves the job pending, so it is claimed again after the claim idle time;
    a retryable failure and a plain one are acknowledged, each under its own count. Each is
    logged under the id of the request that queued it."""
    compactor = Compactor(
        answers={
            "held": ["busy", "done"],
            "retry": [CompactionRetry("store down")],
            "fails": [RuntimeError("corrupt")],
            "deleted": ["deleted"],
        }
    )
    results = {"held": "done", "retry": "put back", "fails": "failed", "deleted": "deleted"}
    labels = ["compaction_done", "compaction_put_back", "compaction_failed", "compaction_deleted"]
    before = counts(labels)
    for name in results:
        await setup.compactions.enqueue(compaction_job(name, "espcn:3", request_id=name))
    stop, task = await running(setup.worker(Engine(), Cache(), compactor, compaction_slots=4))

    await until(lambda: len(compactor.calls) == 4, "the first call for each image")
    await until(lambda: len(setup.outcomes) == 3, "three compactions acknowledged")
    held_back = str(compaction_job("held", "espcn:3").key) not in setup.outcomes

    def logged(name: str) -> bool:
        return worker_lines.of(name, rf"compaction {JOB_ID} of {name}: {results[name]}")

    await until(lambda: all(map(logged, results)), "a line for each compaction")
    await until(lambda: len(setup.outcomes) == len(results), "every outcome heard")
    after = counts(labels)
    await stopped(stop, task)

    assert held_back and compactor.calls.count("held") == 2
    assert set(compactor.models) == {"espcn:3"}
    assert {k: after[k] - before[k] for k in after} == dict.fromkeys(labels, 1)
    published = {name: setup.outcomes[str(compaction_job(name, "espcn:3").key)] for name in results}
    assert published == {
        "held": {"code": None, "message": ""},
        "retry": {"code": None, "message": ""},
        "fails": {"code": "render_failed", "message": "corrupt"},
        "deleted": {"code": None, "message": ""},
    }
    assert worker_lines.of("held", "compaction of held is another's for now")
    assert worker_lines.of("retry", "compaction of retry put back until the next sweep: store down")
    assert worker_lines.of("fails", "compaction of fails failed")
    assert await setup.settled()


async def test_a_compaction_of_a_worker_that_died_is_adopted_by_another(setup: Setup) -> None:
    await setup.compactions.ensure_group()
    await setup.compactions.enqueue(compaction_job("orphan", "bicubic"))
    assert len(await setup.compactions.read("dead-worker", 1, None)) == 1
    compactor = Compactor()
    stop, task = await running(setup.worker(Engine(), Cache(), compactor))

    await until(setup.settled, "the orphaned compaction finished")
    await stopped(stop, task)

    assert compactor.calls == ["orphan"]


async def test_a_held_compaction_is_never_claimed_by_another_worker(setup: Setup) -> None:
    """The holder renews its claim on compactions as on renders, so a slow compaction is not
    run twice at once. (A claim idle time of a second: a loaded machine that stalls the test's
    event loop for a few hundred milliseconds must not pass for a dead holder.)"""
    idle = 1.0
    first, second = Compactor(), Compactor()
    first.release.clear()
    await setup.compactions.enqueue(compaction_job("slow", "bicubic"))
    stop_first, first_task = await running(
        setup.worker(Engine(), Cache(), first, claim_idle_seconds=idle)
    )
    await until(lambda: first.holding == 1, "the first worker compacting")
    stop_second, second_task = await running(
        setup.worker(Engine(), Cache(), second, claim_idle_seconds=idle)
    )

    await asyncio.sleep(3 * idle)  # three claim periods: each would have claimed it
    claimed_by_second = list(second.calls)
    first.release.set()
    await until(setup.settled, "the compaction acknowledged")
    await stopped(stop_second, second_task)
    await stopped(stop_first, first_task)

    assert claimed_by_second == []
    assert first.calls == ["slow"]


async def test_stopping_finishes_the_jobs_in_hand_and_reads_no_more(
    setup: Setup, worker_lines: WorkerLines
) -> None:
    """The job's line gives its time from start to acknowledgement, in milliseconds."""
    engine = Engine()
    engine.release.clear()
    inhand = job("inhand")
    await setup.renders.enqueue(inhand)
    queued = time.perf_counter()
    worker = setup.worker(engine, Cache(), Compactor(), concurrency=2)
    stop, task = await running(worker)
    await until(lambda: engine.holding == 1, "the job in hand")  # and a free slot: reading
    started = time.perf_counter()

    stop.set()
    await until(lambda: gauge("srstore_worker_up") == 0, "the worker draining")
    await setup.renders.enqueue(job("later"))
    await asyncio.sleep(0.2)  # held a while longer, so the time logged is at least that
    held = time.perf_counter() - started
    engine.release.set()
    await asyncio.wait_for(task, 10)
    elapsed = time.perf_counter() - queued

    await until(lambda: str(inhand.key) in setup.outcomes, "its outcome heard by its waiters")
    assert engine.rendered == [inhand.key.image_id]
    assert setup.outcomes[str(inhand.key)]["code"] is None
    assert await setup.renders.depth() == 1  # "later" waits for another worker
    line = rf"job {JOB_ID} for {re.escape(str(inhand.key))}: rendered in (\d+) ms"
    times = [int(m[1]) for rid, text in worker_lines.lines if (m := re.fullmatch(line, text))]
    assert len(times) == 1 and held * 1000 <= times[0] + 1 <= elapsed * 1000 + 1
    stream = re.escape(setup.renders.stream)
    assert worker_lines.of(None, rf"worker {worker.name} takes jobs from {stream} \(1 shards\)")
    assert worker_lines.of(None, rf"worker {worker.name} drains 1 job\(s\)")


async def test_a_worker_with_every_slot_busy_says_it_drains_as_soon_as_it_is_stopped(
    setup: Setup,
) -> None:
    """Not once its job ends: ``srstore_worker_up`` reads 0 while the job in hand runs on."""
    engine = Engine()
    engine.release.clear()
    inhand = job("inhand")
    await setup.renders.enqueue(inhand)
    stop, task = await running(setup.worker(engine, Cache(), Compactor(), concurrency=1))
    await until(lambda: engine.holding == 1, "the job in hand, in the only slot")

    stop.set()
    await until(lambda: gauge("srstore_worker_up") == 0, "the worker draining", timeout=5)
    held_meanwhile = engine.holding == 1 and not task.done()
    engine.release.set()
    await asyncio.wait_for(task, 10)

    assert held_meanwhile
    assert engine.rendered == [inhand.key.image_id]


class FlakyQueue(JobQueue):
    """A queue whose first ``failures`` reads lose the connection."""

    failures = 1

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list:  # type: ignore[override]
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("connection lost")
        return await super().read(consumer, count, block_ms)


async def test_a_lost_connection_is_logged_and_reading_goes_on(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyQueue(setup.client, setup.renders.stream, 64)
    setup.renders = flaky
    engine = Engine()
    await flaky.enqueue(job("after"))
    stop, task = await running(setup.worker(engine, Cache(), Compactor()))

    await until(lambda: engine.rendered == [job("after").key.image_id], "the job after the error")
    await stopped(stop, task)

    assert flaky.failures == 0
    assert any(
        r.getMessage() == "cannot read jobs: connection lost; retrying" for r in caplog.records
    )


class UnacknowledgingQueue(JobQueue):
    """A queue whose first acknowledgement is lost with the connection."""

    lost = 1

    async def finish(self, job_id: JobId, job: RenderJob, outcome: Outcome) -> None:
        if self.lost:
            self.lost -= 1
            raise RedisConnectionError("connection lost")
        await super().finish(job_id, job, outcome)


async def test_a_job_whose_acknowledgement_is_lost_is_claimed_again_and_finished(
    setup: Setup, worker_lines: WorkerLines
) -> None:
    """Its claim is no longer renewed, so it goes stale and is claimed again: a render then
    finds its result cached, a compaction runs again (compacting twice ends the same)."""
    setup.renders = UnacknowledgingQueue(setup.client, setup.renders.stream, 64)
    setup.compactions = UnacknowledgingQueue(setup.client, setup.compactions.stream, 64)
    render, compaction = job("render"), compaction_job("compaction", "bicubic", "compaction")
    engine, compactor, cache = Engine(), Compactor(), Cache()
    await setup.renders.enqueue(render)
    await setup.compactions.enqueue(compaction)
    stop, task = await running(setup.worker(engine, cache, compactor))

    await until(lambda: len(setup.outcomes) == 2, "both acknowledged at last")
    await until(setup.settled, "both dropped from their streams")
    await until(
        lambda: worker_lines.of(
            "render", rf"job {JOB_ID} for {re.escape(str(render.key))}: cached.*"
        ),
        "the render's second turn",
    )
    await stopped(stop, task)

    assert engine.rendered == [render.key.image_id] and render.key in cache.entries
    assert compactor.calls == ["compaction", "compaction"]
    assert worker_lines.of("render", rf"could not acknowledge job {JOB_ID}; another worker .*")
    assert worker_lines.of("compaction", rf"could not acknowledge compaction {JOB_ID}; it will .*")


async def test_stopping_finishes_a_compaction_in_hand(setup: Setup) -> None:
    compactor = Compactor()
    compactor.release.clear()
    await setup.compactions.enqueue(compaction_job("inhand", "bicubic"))
    stop, task = await running(setup.worker(Engine(), Cache(), compactor))
    await until(lambda: compactor.holding == 1, "the compaction in hand")

    stop.set()
    await until(lambda: gauge("srstore_worker_up") == 0, "the worker draining")
    compactor.release.set()
    await asyncio.wait_for(task, 10)

    assert await setup.settled()  # acknowledged before the worker returned
    await until(
        lambda: str(compaction_job("inhand", "bicubic").key) in setup.outcomes,
        "its outcome heard by its waiters",
    )


async def test_a_job_that_goes_stale_while_the_worker_runs_is_adopted(
    setup: Setup, worker_lines: WorkerLines
) -> None:
    """Claim sweeps go on after the first: a worker that dies later is noticed too. (The
    live worker is full while the other takes the job, so it cannot read it first.)"""
    gates = {"first": asyncio.Event(), "orphan": asyncio.Event()}
    gates["orphan"].set()
    engine = GatedEngine(gates)
    await setup.renders.enqueue(job("first"))
    stop, task = await running(setup.worker(engine, Cache(), Compactor(), concurrency=1))
    await until(lambda: engine.started == {"first"}, "the live worker full")

    await setup.renders.enqueue(job("orphan"))
    assert len(await JobQueue(setup.client, setup.renders.stream, 64).read("dead", 1, None)) == 1
    await until(lambda: setup.stale(setup.renders, "dead"), "the orphan's claim stale")
    gates["first"].set()
    await until(lambda: "orphan" in engine.started, "the orphan adopted")
    await until(setup.settled, "both finished")
    await stopped(stop, task)

    assert worker_lines.of(None, rf"claimed job {JOB_ID} of a worker that stopped answering")


async def test_an_idle_worker_waits_on_the_queue_rather_than_polling_it(setup: Setup) -> None:
    setup.renders = renders = CountingQueue(setup.client, setup.renders.stream, 64)
    stop, task = await running(setup.worker(Engine(), Cache(), Compactor()))
    await turns(renders, 1)

    before, started = renders.reads, time.perf_counter()
    await asyncio.sleep(1.0)
    reads, elapsed = renders.reads - before, time.perf_counter() - started
    await stopped(stop, task)

    assert reads <= elapsed * 1000 / READ_BLOCK_MS + 1


async def test_a_full_worker_takes_a_new_job_as_soon_as_one_slot_frees(setup: Setup) -> None:
    quick, slow, waiting = job("quick"), job("slow"), job("waiting")
    gates = {name: asyncio.Event() for name in ("quick", "slow", "waiting")}
    engine = GatedEngine(gates)
    for each in (quick, slow):
        await setup.renders.enqueue(each)
    stop, task = await running(setup.worker(engine, Cache(), Compactor(), concurrency=2))
    await until(lambda: engine.started == {"quick", "slow"}, "both slots busy")
    await setup.renders.enqueue(waiting)

    gates["quick"].set()
    await until(lambda: "waiting" in engine.started, "the new job in the freed slot")
    slow_still_held = not gates["slow"].is_set()
    for gate in gates.values():
        gate.set()
    await until(setup.settled, "every job finished")
    await stopped(stop, task)

    assert slow_still_held
