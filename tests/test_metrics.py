"""Metrics (ingest/metrics.py): the workers' cluster-wide counters as Prometheus families,
and a real receiver serving queue age and worker counters while a real worker runs."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import httpx
import pytest
from conftest import Servers, start_receiver, start_worker, wait_for
from prometheus_client import CollectorRegistry, generate_latest

from ingest.metrics import Stage, WorkerCounters
from workers.pipeline import BatchResult
from workers.report import worker_metrics


def test_every_stage_timed_is_exported_the_delete_stage_included() -> None:
    result = BatchResult()
    for stage in Stage:
        with result.timed(stage):
            pass
    counters = WorkerCounters()
    counters.values = worker_metrics(result, seconds=None)
    registry = CollectorRegistry()
    registry.register(counters)
    exported = generate_latest(registry).decode()
    for stage in Stage:
        assert f'koala_worker_stage_seconds_total{{stage="{stage}"}}' in exported, stage


def test_a_batch_becomes_counter_increments_with_a_cumulative_latency_histogram() -> None:
    result = BatchResult()
    result.count(1, "stored", 7)
    result.count(1, "duplicates", 2)
    result.count(2, "merges", 1)
    result.spent("normalize", 0.002)
    out = worker_metrics(result, seconds=0.3)
    assert (out["calls:stored"], out["calls:duplicate"], out["merges"]) == (7, 2, 1)
    assert out["stage_us:normalize"] == 2000 and out["batches"] == 1
    assert "batch_le:0.25" not in out and out["batch_le:0.5"] == out["batch_le:60.0"] == 1


def test_a_replayed_letter_never_makes_a_counter_go_down() -> None:
    replay = BatchResult()  # what pipeline.process counts for a letter stored on replay
    replay.count(1, "stored")
    replay.count(1, "dead_lettered", -1)
    replay.count(1, "replays_resolved")
    copy = BatchResult()  # ... and for a second copy of a letter already replayed
    copy.count(1, "duplicates")
    copy.count(1, "duplicates", -1)
    copy.count(1, "replay_copies")
    for result in (replay, copy):
        assert min(worker_metrics(result, seconds=0.1).values()) >= 0


def test_worker_counters_are_exposed_as_prometheus_families() -> None:
    counters = WorkerCounters()
    counters.values = {"calls:stored": 10, "batches": 2, "batch_le:0.5": 1, "batch_le:1.0": 2,
                       "batch_us_sum": 1_200_000, "stage_us:store": 3_000_000,
                       "reason:missing_message_id": 3}  # fmt: skip
    registry = CollectorRegistry()
    registry.register(counters)
    text = generate_latest(registry).decode()
    assert 'koala_worker_calls_total{outcome="stored"} 10.0' in text
    assert 'koala_worker_calls_total{outcome="duplicate"} 0.0' in text
    assert 'koala_worker_batch_seconds_bucket{le="0.5"} 1.0' in text
    assert 'koala_worker_batch_seconds_bucket{le="+Inf"} 2.0' in text
    assert "koala_worker_batch_seconds_sum 1.2" in text
    assert 'koala_worker_stage_seconds_total{stage="store"} 3.0' in text
    assert 'koala_dead_letters_total{reason="missing_message_id"} 3.0' in text


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.mark.slow
def test_receiver_shows_the_queue_aging_and_the_workers_counters(
    servers: Servers, tmp_path: Path
) -> None:
    from ingest.store import projects

    queue = {"KOALA_QUEUE_NAME": f"metrics-{secrets.token_hex(3)}"}
    import psycopg

    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        project = projects.create(conn, f"m-{secrets.token_hex(3)}")
    rx = start_receiver(servers, tmp_path, **queue)
    worker = None
    try:
        for i in range(5):
            answer = httpx.post(f"{rx.url}/v1/track", auth=(project.public_key, ""), json={
                "event": "E", "anonymousId": f"m{i}", "messageId": f"m-{i}"})  # fmt: skip
            assert answer.status_code == 200
        age = wait_for(
            lambda: (
                (
                    _metric(httpx.get(rx.url + "/metrics").text, "koala_queue_oldest_age_seconds")
                    or 0
                )
                >= 1.5
            ),
            timeout=10,
        )
        assert age
        before = _metric(httpx.get(rx.url + "/metrics").text,
                         'koala_worker_calls_total{outcome="stored"}') or 0  # fmt: skip
        worker = start_worker(servers, tmp_path, name="metrics", **queue)

        def drained() -> bool:
            text = httpx.get(rx.url + "/metrics").text
            stored = _metric(text, 'koala_worker_calls_total{outcome="stored"}') or 0
            return stored >= before + 5 and _metric(text, "koala_queue_oldest_age_seconds") == 0

        wait_for(drained, timeout=30, interval=0.5)
        text = httpx.get(rx.url + "/metrics").text
        assert (_metric(text, "koala_worker_batch_seconds_count") or 0) >= 1
        assert (_metric(text, 'koala_worker_stage_seconds_total{stage="normalize"}') or 0) > 0
    finally:
        if worker is not None:
            worker.stop()
        rx.proc.stop()


def test_grafana_dashboard_queries_only_metrics_the_receiver_exposes() -> None:
    import json

    from conftest import ROOT

    from ingest import metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exposed = {
        family.name + suffix
        for family in metrics.REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "koala-ingest.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bkoala_\w+", target["expr"])
    }
    assert len(dashboard["panels"]) >= 10
    assert used and used <= exposed, used - exposed
    # every worker family is on the dashboard
    for family in ("koala_worker_calls_total", "koala_worker_batch_seconds_bucket",
                   "koala_queue_oldest_age_seconds", "koala_dead_letters_total"):  # fmt: skip
        assert family in used
