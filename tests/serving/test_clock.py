"""The service clock's held instant, on a real filesystem: every hold is seen by the
next read, however close together (readers tell files apart by inode, mtime and size,
and a freed inode is reused at once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from serving.clock import ServiceClock, held_clock_path

DAY0 = datetime(2026, 3, 7, tzinfo=UTC)


def test_every_hold_is_read_back_by_another_worker_at_once(tmp_path: Path) -> None:
    path = held_clock_path(tmp_path)
    driver, worker = ServiceClock(path, 3_600, 300), ServiceClock(path, 3_600, 300)
    assert worker.read().held is False
    for i in range(300):  # same-length texts, microseconds apart: only the mtime differs
        instant = DAY0 + timedelta(seconds=i % 2)
        driver.hold(instant)
        assert worker.read().now == instant, i
    driver.release()
    assert worker.read().held is False


def test_the_accepted_skew_is_the_settings(tmp_path: Path) -> None:
    clock = ServiceClock(held_clock_path(tmp_path), 3_600, 300)
    now = DAY0
    assert clock.refusal(now + timedelta(seconds=300), now) is None
    assert clock.refusal(now - timedelta(seconds=3_600), now) is None
    ahead = clock.refusal(now + timedelta(seconds=301), now)
    late = clock.refusal(now - timedelta(days=400), now)
    assert ahead is not None and "5 min after the service clock" in ahead
    assert late is not None and "400 days before the service clock" in late


def test_a_clock_file_edited_by_hand_falls_back_to_the_wall_clock(tmp_path: Path) -> None:
    path = held_clock_path(tmp_path)
    path.write_text("{not json")
    reading = ServiceClock(path, 3_600, 300).read()
    assert reading.held is False
    assert abs(reading.now - datetime.now(UTC)) < timedelta(seconds=5)
