"""The one place Celery is wired in: the app, its settings, the base task, the tasks, beat.

Delivery is at-least-once and writes are idempotent: a task is acknowledged only after its
transaction commits (`acks_late`), a task whose worker process dies is redelivered
(`reject_on_worker_lost`), the messages of a whole worker lost are queued again once its
heartbeat stops (`Heartbeat`, workers/recovery.py), and a redelivered batch finds its
messageIds taken and writes nothing twice.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import orjson
from celery import Celery, Task, bootsteps, signals
from kombu.serialization import register as register_serializer
from kombu.utils.json import dumps as kombu_json_dumps

from ingest import redis_clients
from ingest.breaker import count
from ingest.config import Settings, get_settings
from ingest.identifiers import Rules
from ingest.message import QueuedRequest
from ingest.queue import TASK_NAME
from ingest.store import jobs
from workers import batch, pipeline, project_rules, recovery, report, schedule
from workers import jobs as jobs_runner
from workers.failure.policy import DeadLetter, Retry, RetryPolicy
from workers.jobs.runner import Runner
from workers.resources import Pools, RedisClient

log = logging.getLogger(__name__)

JOB_TASKS = ("koala.run_job", "koala.scheduled", "koala.resume_jobs", "koala.recover_lost")


def decode_task_bodies_with_orjson() -> None:
    """Decode JSON task bodies with orjson in this process (encoding stays kombu's).

    A worker decoded every batch with kombu's json and its `object_hook` (which revives
    kombu's type markers): about a tenth of a worker's time in the end-to-end benchmark
    (py-spy). Every task here takes plain JSON (ints, strings, lists, dicts; no datetimes
    or other marked types), so orjson reads our documents several times faster. One
    difference, on purpose: a call whose properties happen to look like a kombu marker
    (`{"__type__": "decimal", "__value__": "1.5"}`) is now stored as sent, where kombu
    turned it into a Decimal. The wire format is unchanged: receivers, workers and queued
    messages of any version mix.
    """
    register_serializer(  # type: ignore[no-untyped-call]
        "json", kombu_json_dumps, orjson.loads, content_type="application/json"
    )


# Python's cyclic garbage collector runs a young-generation pass every 700 allocations
# by default. A batch allocates tens of thousands of short-lived dicts, lists and Event
# objects a second, none of them in cycles that outlive the batch, so those passes scan
# the same live batch over and over. At 50,000 the worker's CPU for the same batches fell
# by 8-11% (`bench.batch_profile --calls 30000 --visitors 3000`, worker CPU a call,
# alternating: 75.0, 82.4, 83.5 us at the default, 68.9, 73.3, 74.1 at 50,000,
# 2026-11-30); memory stays flat (the soak of `python -m bench`). The objects of the
# loaded program are frozen first: the older generations' passes skip them, and the pool
# children forked after do not touch (so copy) their pages.
GC_THRESHOLDS = (50_000, 20, 100)


@signals.worker_init.connect
def tune_garbage_collector(**_: Any) -> None:
    """In the worker's main process, before the pool is forked (its children inherit it)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def make_app(settings: Settings) -> Celery:
    app = Celery("koala_ingest", set_as_current=True)
    app.conf.update(
        # one server, or kombu's sentinel:// transport (ingest/redis_clients.py)
        broker_url=redis_clients.broker_url(settings.redis_url) if settings.redis_url else None,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": settings.redis_key_prefix,
            # kombu scans for expired unacked messages every interval x throttle seconds
            # (100 s by default); scan every few seconds so a message of a worker that died
            # is redelivered soon after its visibility timeout (live workers heartbeat theirs:
            # see Heartbeat).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
            **(redis_clients.broker_transport_options(settings.redis_url or "redis://")),
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue_name,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        beat_scheduler="redbeat.RedBeatScheduler",
        **(redis_clients.redbeat_settings(settings.redis_url) if settings.redis_url else {}),
        redbeat_key_prefix=settings.redis_key_prefix + "redbeat:",
        # A standby beat takes over within this many seconds of the active one dying.
        redbeat_lock_timeout=60,
        beat_max_loop_interval=10,
        beat_schedule=schedule.beat_schedule(settings),
        # Jobs have a queue of their own: a backlog of calls never delays them.
        task_routes={name: {"queue": settings.jobs_queue} for name in JOB_TASKS},
    )
    return app


class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Every KOALA_HEARTBEAT_SECONDS, in the worker's consumer process, mark the messages it
    holds as alive (workers/recovery.py `heartbeat`): what a live worker holds is never
    redelivered, whatever it takes; what a dead one held is queued again within
    KOALA_LOST_AFTER_SECONDS plus one sweep.

    The consumer's channel knows what it holds: kombu's virtual QoS keeps every delivered,
    unacknowledged message in `_delivered` (delivery tag -> message), prefetched, running,
    or waiting for a retry's countdown alike. The timer runs on the consumer's event loop,
    between its other work."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref: Any = None

    def start(self, consumer: Any) -> None:
        every = get_settings().heartbeat_seconds
        self.timer_ref = consumer.timer.call_repeatedly(every, self.beat, (consumer,))

    def stop(self, consumer: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def beat(self, consumer: Any) -> None:
        try:
            delivered = consumer.task_consumer.channel.qos._delivered
            held = [
                recovery.Held(
                    str(tag),
                    message.headers.get("id"),
                    (message.delivery_info or {}).get("routing_key"),
                )
                for tag, message in list(delivered.items())
            ]
            recovery.heartbeat(
                RedisClient.get(),
                get_settings().redis_key_prefix,
                held,
                worker=str(getattr(consumer, "hostname", "") or "") or None,
            )
        except Exception as error:  # never stop the consumer for it: the next beat tries
            log.warning("heartbeat of held messages failed: %s", error)


decode_task_bodies_with_orjson()
app = make_app(get_settings())
app.steps["consumer"].add(Heartbeat)


class BatchTask(Task):  # type: ignore[misc]
    """Base task of batches, in the spirit of Warehouse's: acknowledged only after its
    transaction commits (`acks_late`), redelivered if its process dies
    (`reject_on_worker_lost`), and a failure carried out as the retry policy decides
    (workers/failure/policy.py): retried after a backoff, dead-lettered, or held."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True

    def fail(
        self, error: Exception, task_id: str, queue: str, requests: list[QueuedRequest]
    ) -> dict[str, int]:
        policy = RetryPolicy.of(get_settings())
        attempts = self.request.retries
        outcome = policy.decide(attempts, batch.age_seconds(requests), error)
        if isinstance(outcome, DeadLetter):
            log.error(
                "batch %s: still failing after %d retries: dead-lettering it", task_id, attempts
            )
            try:
                return _dead_letter_batch(task_id, queue, requests, outcome.reason, error)
            except Exception as again:  # the store itself is down: keep the batch queued
                outcome, error = policy.when_dead_letters_fail(), again
        elif isinstance(outcome, Retry):
            report.report(pipeline.BatchResult(), retries=1)
            log.warning(
                "batch %s: %s; retry %d in %.1fs", task_id, error, attempts + 1, outcome.after
            )
        else:
            # the logs and the retries metric show it; the batch waits in the queue
            log.error(
                "batch %s failed unexpectedly; it stays queued and is retried",
                task_id,
                exc_info=error,
            )
            report.report(pipeline.BatchResult(), retries=1)
        report.postpone(task_id, queue, outcome.after)
        raise self.retry(exc=error, countdown=outcome.after, max_retries=None) from None


@app.task(name=TASK_NAME, base=BatchTask, bind=True)
def ingest(self: BatchTask, wire: list[dict[str, Any]]) -> dict[str, int]:
    """Process one queued batch (one or more whole HTTP requests), exactly once
    (workers/batch.py); a failure goes to `BatchTask.fail`."""
    settings = get_settings()
    requests = [QueuedRequest.from_wire(r) for r in wire]
    task_id = self.request.id or ""
    # the queue it came from: its ledger entry lives beside that queue
    queue = str((self.request.delivery_info or {}).get("routing_key") or settings.queue_name)
    report.hold_while_breaker_open(task_id)
    started = time.perf_counter()
    try:
        with Pools.get().connection() as conn:
            rules = project_rules.current(conn, Rules.of(settings), settings.key_cache_seconds)
            result = batch.run(conn, task_id, requests, rules, settings.statement_timeout_ms)
    except Exception as error:
        return self.fail(error, task_id, queue, requests)
    if result is None:
        log.info("batch %s was already committed; skipped", task_id)
        report.settle(task_id, queue)
        return {"skipped": 1}
    report.report(result, seconds=time.perf_counter() - started)
    report.settle(task_id, queue)
    summary = {
        what: result.total(what) for what in ("stored", "duplicates", "rejected", "dead_lettered")
    }
    log.info(
        "batch done %s",
        summary,
        extra={"stage": "store", "batch": task_id, "projects": sorted(result.per_project)},
    )
    return summary


def _dead_letter_batch(
    task_id: str, queue: str, requests: list[QueuedRequest], reason: str, error: BaseException
) -> dict[str, int]:
    with Pools.get().connection() as conn:
        result = batch.dead_letter(conn, task_id, requests, reason, error)
    report.settle(task_id, queue)
    if result is None:
        return {"skipped": 1}
    report.report(result)
    return {"dead_lettered": result.total("dead_lettered")}


def _runner() -> Runner:
    settings = get_settings()
    ctx = jobs_runner.Context(settings, Rules.of(settings), RedisClient.get)
    return Runner(Pools.get().connection, ctx)


def _run_slice(job_id: int) -> str:
    """Run a job for one time slice; hand the rest to a continuation task."""
    status = _runner().run(job_id, time_budget=get_settings().job_slice_seconds)
    if status == "queued":
        run_job.apply_async(args=[job_id])
    return status


@app.task(name="koala.run_job", bind=True, acks_late=True)
def run_job(self: Task, job_id: int) -> str:
    """Run (or resume) a job: reprocessing asked for by the API or the CLI, or the rest of a
    scheduled run. A second delivery finds the job held and does nothing."""
    return _run_slice(job_id)


@app.task(name="koala.scheduled", bind=True, acks_late=True)
def scheduled(self: Task, kind: str) -> str:
    """A beat entry: record a run of `kind` for this period and run it. A second run in
    the same period (two beats, a redelivery) or on top of an active run is not started."""
    settings = get_settings()
    with Pools.get().connection() as conn:
        started = schedule.start_runs(conn, settings, kind, time.time())
    if not started:
        return "not_started"
    for job_id in started[1:]:
        run_job.apply_async(args=[job_id])
    return _run_slice(started[0])


@app.task(name="koala.recover_lost", bind=True, acks_late=True)
def recover_lost(self: Task) -> int:
    """Put back on the queue the batches a killed consumer lost (see workers/recovery.py)."""
    settings = get_settings()
    with Pools.get().connection() as conn:
        decision = recovery.recover(
            RedisClient.get(),
            conn,
            settings.redis_key_prefix,
            settings.queue_name,
            settings.lost_after_seconds,
        )
    if decision.requeue:
        count(RedisClient.get(), settings.redis_key_prefix, {"recovered": len(decision.requeue)})
    return len(decision.requeue)


@app.task(name="koala.resume_jobs", bind=True, acks_late=True)
def resume_jobs(self: Task) -> int:
    """Hand stalled jobs (a continuation message lost, a runner killed) to a worker."""
    with Pools.get().connection() as conn:
        stalled = jobs.stalled(conn, jobs.STALE_SECONDS)
    for job_id in stalled:
        log.warning("job %d stalled; resuming it", job_id)
        run_job.apply_async(args=[job_id])
    return len(stalled)
