"""A redis-py client from the online store's connection string (Feast's form:
host:port[,db=N,username=...,password=...,ssl=true]), so the stream, the stack's checks
and Feast all read one setting the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fraudlab.errors import ConfigError

if TYPE_CHECKING:
    import redis


def redis_client(connection: str, timeout_seconds: float) -> redis.Redis:
    """Timeouts on every call, and one immediate retry on a dropped connection (a
    restarted server): redis-py's default backs off for seconds, and our callers (the
    stream's publisher and worker, the stack's checks) keep their own retry policy."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    parts = connection.split(",")  # Feast's parser, as far as we use it
    nodes = [p for p in parts if "=" not in p] or ["localhost:6379"]
    params = dict(p.split("=", 1) for p in parts if "=" in p)
    host, _, port = nodes[0].rpartition(":")
    try:
        db, port_number = int(params.get("db", 0)), int(port)
    except ValueError:
        raise ConfigError(f"redis connection {connection!r}: use host:port[,db=N,...]") from None
    return redis.Redis(
        host=host,
        port=port_number,
        db=db,
        username=params.get("username"),  # a Redis ACL user (docker-compose.yml)
        password=params.get("password"),
        ssl=params.get("ssl", "false").lower() == "true",
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1),
    )
