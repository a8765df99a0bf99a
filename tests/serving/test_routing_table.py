"""The shared routing row outlives a server run (the stack keeps it across restarts),
so a row written by an older version must still be read and written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from serving.routing import RoutingPolicy, SharedRouting


def test_a_routing_row_from_before_the_breaker_is_read_and_updated(tmp_path: Path) -> None:
    path = tmp_path / "serving_routing.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE routing (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " canary_share REAL NOT NULL, shadow INTEGER NOT NULL, updated_at REAL NOT NULL)"
    )
    conn.execute("INSERT INTO routing VALUES (1, 0.25, 1, 0.0)")
    conn.commit()
    conn.close()
    shared = SharedRouting(path, RoutingPolicy(canary_share=0.0, shadow=False))

    synced = shared.sync()
    assert (synced.canary_share, synced.shadow, synced.breaker) == (0.25, True, "off")
    tripped = shared.update(None, None, "review_instead_of_decline")
    assert (tripped.canary_share, tripped.breaker) == (0.25, "review_instead_of_decline")
    again = SharedRouting(path, RoutingPolicy(canary_share=0.0, shadow=False)).sync()
    assert (again.canary_share, again.shadow, again.breaker) == (
        0.25,
        True,
        "review_instead_of_decline",
    )
