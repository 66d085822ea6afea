"""`REDIS_URL` names one server or a Sentinel set; every Redis user builds its client from
it through ingest/redis_clients.py, so they all follow the same setting."""

from __future__ import annotations

import re

import pytest

from ingest import redis_clients
from ingest.config import ConfigError, Settings, load
from workers.tasks import make_app

SENTINEL_URL = "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380,sentinel-3/koala/2"


def test_a_plain_url_is_used_as_it_is_by_every_user() -> None:
    url = "redis://127.0.0.1:6379/0"
    assert not redis_clients.parse(url).is_sentinel
    assert redis_clients.broker_url(url) == url
    assert redis_clients.broker_transport_options(url) == {}
    assert redis_clients.redbeat_settings(url) == {"redbeat_redis_url": url}
    client = redis_clients.sync_client(url)
    assert type(client.connection_pool).__name__ == "ConnectionPool"


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    target = redis_clients.parse(SENTINEL_URL)
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3", 26379))
    assert (target.master, target.db, target.password) == ("koala", 2, "s3cret")
    assert "s3cret" not in repr(target)


def test_every_redis_user_follows_the_sentinel_set() -> None:
    sync = redis_clients.sync_client(SENTINEL_URL)
    assert type(sync.connection_pool).__name__ == "SentinelConnectionPool"
    assert sync.connection_pool.service_name == "koala"
    assert sync.connection_pool.connection_kwargs["db"] == 2
    assert sync.connection_pool.connection_kwargs["password"] == "s3cret"
    aio = redis_clients.async_client(SENTINEL_URL, socket_timeout=5)
    assert type(aio.connection_pool).__name__ == "SentinelConnectionPool"
    assert aio.connection_pool.service_name == "koala"
    app = make_app(Settings(redis_url=SENTINEL_URL))
    assert app.conf.broker_url == (
        "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2;sentinel://sentinel-3:26379/2"
    )
    options = app.conf.broker_transport_options
    assert options["master_name"] == "koala"
    assert options["global_keyprefix"]  # ours are kept beside the sentinel's
    assert app.conf.redbeat_redis_url.startswith("redis-sentinel")
    assert app.conf.redbeat_redis_options["sentinels"] == list(
        redis_clients.parse(SENTINEL_URL).sentinels
    )
    assert app.conf.redbeat_redis_options["service_name"] == "koala"
    assert app.conf.redbeat_redis_options["password"] == "s3cret"


def test_kombu_reads_the_broker_url_as_three_sentinels_and_the_master_name() -> None:
    from kombu import Connection

    app = make_app(Settings(redis_url=SENTINEL_URL))
    conn = Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options)
    assert conn.transport_cls == "sentinel"
    assert len(conn.alt) == 3
    assert (conn.password, conn.virtual_host) == ("s3cret", "2")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379,h2:26379", "master name"),
        ("redis+sentinel://h1:26379/koala/zero", "not a number"),
        ("redis+sentinel://h1:port/koala", "port is not a number"),
        ("redis+sentinel://h1:26379,,h3/koala", "host:port"),
        ("redis+sentinel://h1/koala?master=x", "unknown option"),
        ("sentinel://h1:26379/koala", "redis+sentinel://"),
    ],
)
def test_a_wrong_redis_url_stops_the_process_with_one_line(
    monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigError, match=f"^REDIS_URL: .*{re.escape(says)}") as caught:
        load()
    assert "\n" not in str(caught.value)


def test_replica_acks_are_off_by_default_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load().redis_replica_acks == 0
    monkeypatch.setenv("KOALA_REDIS_REPLICA_ACKS", "-1")
    with pytest.raises(ConfigError, match=r"^KOALA_REDIS_REPLICA_ACKS: "):
        load()
