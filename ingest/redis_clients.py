"""The one place Redis clients are built from `REDIS_URL`: one server, or a Sentinel set.

Every Redis user follows the same setting through here: the receiver's asyncio client
(queue script, polls, metrics), the workers' sync client (ledger, breaker, counters,
recovery sweep), the CLI and admin API, kombu's transport (Celery's broker) and
celery-redbeat. A plain `redis://`, `rediss://` or `unix://` URL is handed to redis-py's
`from_url` exactly as before: no extra cost, no extra round trip.

`redis+sentinel://[[user]:password@]host1:26379,host2:26379/MASTER[/DB][?sentinel_password=...]`
names a Sentinel set and the master it watches. The password (if any) is the data nodes'
(`requirepass` on primary and replicas); `sentinel_password` is the sentinels' own
(`requirepass` in sentinel.conf), when they have one. Clients then ask the sentinels for
the current master before each new connection:

- redis-py's `Sentinel.master_for` pool asks a sentinel for the master's address on every
  connect, drops idle connections when the address changes, and turns a `READONLY` reply
  (a demoted master still reachable) into a `ConnectionError` that disconnects, so the
  next command reconnects to the promoted replica (redis/sentinel.py,
  redis/asyncio/sentinel.py: `SentinelManagedConnection.read_response`). While no master
  is known (the old one is down, none promoted yet) connecting raises
  `MasterNotFoundError`, a `ConnectionError`: the receiver answers 503 + Retry-After, the
  workers' Redis calls fail as they would with one Redis away.
- kombu takes `sentinel://h1:26379;sentinel://h2:26379/DB` with the transport options
  `master_name` and `sentinel_kwargs` (kombu/transport/redis.py: `SentinelChannel`,
  whose pool is `Sentinel.master_for(master_name)`; the URL's password goes to the master).
- celery-redbeat takes `redbeat_redis_url` starting `redis-sentinel` with
  `redbeat_redis_options` `sentinels`, `service_name`, `db`, `password`, `sentinel_kwargs`
  (redbeat/schedulers.py: `get_redis`); `retry_period` -1 keeps it retrying while no
  master is known instead of beat dying.

Evidence: tests/test_sentinel.py runs receiver, worker and beat on a Sentinel URL and
SIGKILLs the primary under load: the first `200` came ~2.3 s after the kill, the worker
reconnected through Celery's broker retry, beat kept sending, and (with
KOALA_REDIS_REPLICA_ACKS=1) every call answered `200` was stored once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:  # redis is imported when a client is built, not when settings are read
    import redis
    import redis.asyncio as aioredis

SENTINEL_SCHEME = "redis+sentinel"
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
# Timeouts of the connections to the sentinels themselves: a sentinel that does not answer
# is skipped for the next one, so keep them short.
SENTINEL_SOCKET_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is: `url` for one server, or sentinels + master name."""

    url: str = field(repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def _auth(self) -> dict[str, Any]:
        auth: dict[str, Any] = {}
        if self.username:
            auth["username"] = self.username
        if self.password:
            auth["password"] = self.password
        return auth

    def _sentinel_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "socket_timeout": SENTINEL_SOCKET_TIMEOUT,
            "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT,
        }
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs


def parse(url: str) -> RedisTarget:
    """Parse and check `REDIS_URL`; ValueError says what is wrong in one line."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in PLAIN_SCHEMES:
        return RedisTarget(url=url)
    if scheme != SENTINEL_SCHEME:
        raise ValueError(
            "must be a redis://, rediss://, unix:// or"
            " redis+sentinel://host:port,host:port/MASTER[/DB] URL"
        )
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) or None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")
        if not host:
            raise ValueError(f"sentinel {item!r}: give host:port (comma-separated)")
        try:
            number = int(port) if port else DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"sentinel {item!r}: the port is not a number") from None
        if not 1 <= number <= 65535:
            raise ValueError(f"sentinel {item!r}: the port is out of range")
        sentinels.append((host, number))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(
            "give the master name after the sentinels: redis+sentinel://h:26379/MASTER[/DB]"
        )
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"the database {path[1]!r} is not a number")
        db = int(path[1])
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))} (known: sentinel_password)"
        )
    sentinel_password = query.get("sentinel_password", [None])[-1] or None
    return RedisTarget(
        url=url,
        sentinels=tuple(sentinels),
        master=path[0],
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client on the server, or on the Sentinel set's current master."""
    import redis
    import redis.sentinel

    target = parse(url)
    if not target.is_sentinel:
        return redis.Redis.from_url(url, **kwargs)
    manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=target._sentinel_kwargs()
    )
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        target.master, db=target.db, **target._auth(), **kwargs
    )
    return client


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """The asyncio twin of `sync_client` (the receiver's)."""
    import redis.asyncio as aioredis
    import redis.asyncio.sentinel as aiosentinel

    target = parse(url)
    if not target.is_sentinel:
        return aioredis.Redis.from_url(url, **kwargs)
    manager = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=target._sentinel_kwargs()
    )
    client: aioredis.Redis = manager.master_for(
        target.master, db=target.db, **target._auth(), **kwargs
    )
    return client


def broker_url(url: str) -> str:
    """Celery's `broker_url`: the same URL, or kombu's `sentinel://...;sentinel://.../DB`."""
    target = parse(url)
    if not target.is_sentinel:
        return url
    auth = ""
    if target.username or target.password:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    urls = [f"sentinel://{auth if i == 0 else ''}{_host(h)}:{p}/{target.db}"
            for i, (h, p) in enumerate(target.sentinels)]  # fmt: skip
    return ";".join(urls)


def broker_transport_options(url: str) -> dict[str, Any]:
    """What kombu's sentinel transport needs beyond the URL (nothing for one server)."""
    target = parse(url)
    if not target.is_sentinel:
        return {}
    return {"master_name": target.master, "sentinel_kwargs": target._sentinel_kwargs()}


def redbeat_settings(url: str) -> dict[str, Any]:
    """celery-redbeat's settings. For one server only the URL, as before (redbeat then
    builds its client with `Redis.from_url`)."""
    target = parse(url)
    if not target.is_sentinel:
        return {"redbeat_redis_url": url}
    options: dict[str, Any] = {
        "sentinels": list(target.sentinels),
        "service_name": target.master,
        "db": target.db,
        "socket_timeout": 5,
        "sentinel_kwargs": target._sentinel_kwargs(),
        # keep retrying (with backoff) while no master is known, instead of beat exiting
        "retry_period": -1,
    }
    if target.password:
        options["password"] = target.password
    if target.username:
        options["username"] = target.username
    return {"redbeat_redis_url": "redis-sentinel://", "redbeat_redis_options": options}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
