"""Deploy files reference real commands and real settings."""

from __future__ import annotations

import configparser
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from conftest import ROOT, koala

from ingest.config import Settings
from ingest.embedded import free_port
from ingest.queue import celery_message

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def _variables() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names.add(alias.choices[0] if alias is not None else f"KOALA_{name.upper()}")  # type: ignore[union-attr]
    return names


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit_runs_a_real_koala_ingest_command(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(unit)
    exec_start = parser["Service"]["ExecStart"].split()
    assert exec_start[0].endswith("/koala-ingest")
    role = exec_start[1]
    assert unit.name == f"koala-ingest-{role}.service"
    done = subprocess.run(koala(role, "--help"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert parser["Service"]["Restart"] == "always"
    assert parser["Service"]["KillSignal"] == "SIGTERM"


def test_env_example_names_only_known_variables() -> None:
    text = (ROOT / "deploy" / "systemd" / "env.example").read_text()
    names = set(re.findall(r"^([A-Z_]+)=", text, re.M))
    assert names and names <= _variables()


def test_procfile_runs_real_commands_and_web_binds_port() -> None:
    entries = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    assert {"web", "worker", "beat"} <= set(entries)
    for command in entries.values():
        program, role = command.split()[:2]
        assert program == "koala-ingest"
        assert (
            subprocess.run(koala(role, "--help"), capture_output=True, timeout=60).returncode == 0
        )


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [v for v in _variables() if f"`{v}`" not in readme]
    assert not missing


# --- deploy/redis/redis.conf: a real redis-server started with the file ------------------

REDIS_CONF = ROOT / "deploy" / "redis" / "redis.conf"


def _redis_server_binary() -> str:
    """A Redis >= 7 server (the file uses 7.0 directives such as `appenddirname`)."""
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    except OSError:
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    match = re.search(r"v=(\d+)\.", version)
    if not match or int(match.group(1)) < 7:
        pytest.skip(f"deploy/redis/redis.conf needs redis-server >= 7, found {version.strip()!r}")
    return found


@contextmanager
def _redis_with_conf(
    data_dir: Path, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], redis.Redis]]:
    """redis-server deploy/redis/redis.conf, with only port, dir and bind overridden."""
    port = free_port()
    argv = [_redis_server_binary(), str(REDIS_CONF), "--port", str(port), "--dir", str(data_dir)]
    with log.open("ab") as out:
        proc = subprocess.Popen([*argv, "--bind", "127.0.0.1"], stdout=out, stderr=out)
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()  # BusyLoadingError (a ConnectionError) while the AOF loads
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start:\n" + log.read_text()) from None
                time.sleep(0.05)
        yield proc, client
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_redis_conf_is_durable_and_never_evicts(tmp_path: Path) -> None:
    with _redis_with_conf(tmp_path, tmp_path / "redis.log") as (_, client):
        config = {
            key: client.config_get(key)[key]
            for key in ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory", "save")
        }
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) > 0  # an explicit ceiling, not "all the machine has"
    assert config["save"] == ""  # RDB off, as the file's comments explain


def test_redis_conf_keeps_queued_calls_across_a_sigkill(tmp_path: Path) -> None:
    """A crash (SIGKILL, no shutdown hook) after the everysec fsync: the AOF replays the
    queue at restart, every message intact and in order."""
    queue_key = Settings.model_fields["redis_key_prefix"].default + "ingest"
    messages = [
        celery_message("ingest", [{"project_id": 1, "calls": [{"messageId": f"m-{i}"}]}])
        for i in range(200)
    ]
    log = tmp_path / "redis.log"
    with _redis_with_conf(tmp_path, log) as (proc, client):
        for start in range(0, len(messages), 50):
            client.lpush(queue_key, *messages[start : start + 50])
        client.hincrby("koala:received", "1", len(messages))
        time.sleep(1.5)  # past appendfsync everysec
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list((tmp_path / "appendonlydir").glob("*.incr.aof"))
    with _redis_with_conf(tmp_path, log) as (_, client):
        assert client.lrange(queue_key, 0, -1) == messages[::-1]
        assert client.hget("koala:received", "1") == b"200"


def test_redis_conf_refuses_writes_over_maxmemory_instead_of_evicting(tmp_path: Path) -> None:
    """noeviction: past maxmemory a push fails with OOM (the receiver answers 503 and the
    sender retries); nothing already queued is evicted."""
    queue_key = "koala:ingest"
    payload = b"x" * 10_000
    with _redis_with_conf(tmp_path, tmp_path / "redis.log") as (_, client):
        client.lpush(queue_key, *[payload] * 20)
        client.set("koala:breaker:state", b"{}", ex=3600)  # what volatile-* would evict first
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 200_000)
        pushed = 20
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for _ in range(1000):
                client.lpush(queue_key, payload)
                pushed += 1
        assert 20 < pushed < 1020
        assert client.llen(queue_key) == pushed
        assert client.exists("koala:breaker:state")
        assert int(client.info("stats")["evicted_keys"]) == 0
        client.rpop(queue_key, 10)  # a worker drains some: writes are accepted again
        client.lpush(queue_key, payload)
