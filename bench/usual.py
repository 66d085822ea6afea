"""The usual way, as a team would first write it: the endpoint calls `.delay()` once per
call, and a Celery task INSERTs one event per call. The baseline koala-ingest is measured
against, driven by the same load."""

from __future__ import annotations

import os

import orjson
import psycopg
from celery import Celery
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PREFIX = os.environ.get("KOALA_REDIS_KEY_PREFIX", "bench:") + "usual:"
celery = Celery("usual", broker=os.environ.get("REDIS_URL"))
celery.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    task_default_queue="usual",
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
)
_conn: psycopg.Connection | None = None


@celery.task(name="usual.insert")
def insert(call: dict) -> None:
    global _conn
    if _conn is None:
        _conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    _conn.execute(
        "INSERT INTO usual_events (message_id, type, event, payload) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (message_id) DO NOTHING",
        (call.get("messageId"), call.get("type"), call.get("event"), orjson.dumps(call).decode()),
    )


async def batch_endpoint(request: Request) -> JSONResponse:
    body = await request.body()
    for call in orjson.loads(body)["batch"]:
        insert.delay(call)  # synchronous publish, as the usual code does
    return JSONResponse({"success": True})


app = Starlette(routes=[Route("/v1/batch", batch_endpoint, methods=["POST"])])
