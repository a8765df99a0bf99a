"""Velocity features: the offline SQL, the online definition and the payment state agree.

The offline table (DuckDB window frames) is held to `customer_velocity` and
`terminal_velocity`, the functions serving computes from the online state, on the
state as it stood at each payment. The state itself is a set: shuffled, repeated or
late events merge to the same state, which is what lets a retry or a second stream
worker leave the counts alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import DayGrid
from features.velocity import (
    CUSTOMER_VELOCITY_FEATURES,
    DAY_US,
    STATE_MAX_PAYMENTS,
    STATE_RETENTION_US,
    PaymentState,
    customer_velocity,
    terminal_velocity,
)
from features.velocity_offline import (
    customer_velocity_table,
    payment_state_table,
    terminal_velocity_table,
)
from serving.velocity_state import PaymentEvent, PaymentStates, state_arrays_equal
from tests.conftest import World


def _micros(ts: pd.Series) -> np.ndarray:
    return ts.dt.as_unit("us").astype("int64").to_numpy()


def _state_until(tx: pd.DataFrame, key: str, entity: int, until_us: int, kind: str) -> PaymentState:
    """The state an online writer holds after every payment at or before `until_us`."""
    mask = (tx[key].to_numpy() == entity) & (_micros(tx["event_timestamp"]) <= until_us)
    picked = tx[mask]
    events = PaymentState.of(
        picked["transaction_id"],
        _micros(picked["event_timestamp"]),
        picked["amount"],
        picked["terminal_id"],
    )
    return PaymentState.empty().merged(events, kind)


@pytest.fixture(scope="module")
def tables(world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    tx = world.transactions
    return customer_velocity_table(tx), terminal_velocity_table(tx)


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or bool(np.isclose(a, b, rtol=1e-9, atol=1e-9))


def test_offline_table_equals_the_online_definition_on_the_state_at_each_payment(
    world: World, tables
) -> None:
    tx = world.transactions.set_index("transaction_id", drop=False)
    customers, terminals = tables
    rng = np.random.default_rng(1)
    burst = customers.index[customers["customer_payments_10m"] > 0].to_numpy()
    rows = [*rng.choice(len(customers), 40, replace=False), *burst[:40]]
    wrong = []
    for i in rows:
        offline = customers.iloc[i]
        payment = tx.loc[offline["transaction_id"]]
        at = int(pd.Timestamp(payment["event_timestamp"]).value // 1_000)
        state = _state_until(
            world.transactions, "customer_id", payment["customer_id"], at, "customer"
        )
        online = customer_velocity(state, at)
        wrong += [
            f"{offline['transaction_id']} {n}"
            for n in CUSTOMER_VELOCITY_FEATURES
            if not _same(online[n], float(offline[n]))
        ]
        t_state = _state_until(
            world.transactions, "terminal_id", payment["terminal_id"], at, "terminal"
        )
        t_offline = terminals.set_index("transaction_id").loc[offline["transaction_id"]]
        if (
            terminal_velocity(t_state, at)["terminal_payments_1h"]
            != t_offline["terminal_payments_1h"]
        ):
            wrong.append(f"{offline['transaction_id']} terminal_payments_1h")
    assert len(burst) >= 40
    assert wrong == []


def _events(n: int, seed: int) -> PaymentState:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, 3 * DAY_US, size=n))
    return PaymentState.of(
        np.arange(n) + 1000, times, rng.uniform(1, 100, n).round(2), rng.integers(0, 50, n)
    )


def _one(state: PaymentState, i: int) -> PaymentState:
    return PaymentState.of(
        state.ids[i : i + 1],
        state.times_us[i : i + 1],
        state.amounts[i : i + 1],
        state.terminals[i : i + 1],
    )


def test_state_merge_ignores_order_and_repeats() -> None:
    events = _events(300, seed=2)
    in_order = PaymentState.empty()
    for i in range(len(events)):
        in_order = in_order.merged(_one(events, i), "customer")
    rng = np.random.default_rng(3)
    shuffled = PaymentState.empty()
    for i in [*rng.permutation(len(events)), *rng.integers(0, len(events), 100)]:  # + retries
        shuffled = shuffled.merged(_one(events, int(i)), "customer")
    assert state_arrays_equal(in_order, shuffled)
    newest = events.times_us.max()
    assert in_order.times_us.min() >= newest - STATE_RETENTION_US["customer"]  # pruned by age
    assert len(in_order) == int((events.times_us >= newest - STATE_RETENTION_US["customer"]).sum())
    assert np.all(np.diff(in_order.times_us) >= 0)


def test_state_keeps_the_newest_payments_up_to_its_cap() -> None:
    n = STATE_MAX_PAYMENTS + 50
    times = np.arange(n) * 1_000_000  # one a second: all inside the retention
    events = PaymentState.of(np.arange(n), times, np.ones(n), np.zeros(n))
    state = PaymentState.empty().merged(events, "terminal")
    assert len(state) == STATE_MAX_PAYMENTS
    assert state.ids[0] == n - STATE_MAX_PAYMENTS and state.ids[-1] == n - 1


def test_a_retried_payment_changes_no_state_and_sees_the_same_history() -> None:
    events = _events(20, seed=4)
    state = PaymentState.empty().merged(events, "customer")
    retry = _one(events, 10)
    again, changed = state.changed_by(retry, "customer")
    assert not changed and state_arrays_equal(state, again)
    at = int(events.times_us[10])
    before = PaymentState.empty().merged(
        PaymentState.of(
            events.ids[:10], events.times_us[:10], events.amounts[:10], events.terminals[:10]
        ),
        "customer",
    )
    assert customer_velocity(state, at) == pytest.approx(customer_velocity(before, at), nan_ok=True)


def test_state_snapshots_hold_the_payments_before_their_midnight(world: World) -> None:
    tx = world.transactions
    grid = DayGrid.covering(tx["event_timestamp"])
    table = payment_state_table(tx, "customer", grid.day0, grid.n_days)
    rng = np.random.default_rng(5)
    for i in rng.choice(len(table), 30, replace=False):
        row = table.iloc[i]
        midnight = int(row["event_timestamp"].value // 1_000)
        want = _state_until(tx, "customer_id", row["customer_id"], midnight - 1, "customer")
        keep = want.times_us >= midnight - STATE_RETENTION_US["customer"]
        stored = PaymentState.unpacked(row["payments"])
        assert stored.ids.tolist() == want.ids[keep].tolist()
        assert stored.times_us.tolist() == want.times_us[keep].tolist()
        assert stored.amounts.tolist() == want.amounts[keep].tolist()
        assert row["event_timestamp"] == row["event_timestamp"].floor("D")


def test_applying_events_to_the_online_store_is_idempotent_in_any_order(
    world: World, tmp_path
) -> None:
    """On a real (SQLite) online store: shuffled and repeated events give the state
    merged in order, and a second delivery writes nothing."""
    from features.store import apply_definitions, open_store
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    (tmp_path / "feature_data").symlink_to(world.settings.feature_data_dir)
    apply_definitions(settings)
    states = PaymentStates(open_store(settings))
    tx = world.transactions
    customer = int(tx["customer_id"].value_counts().index[0])
    mine = tx[tx["customer_id"] == customer].tail(30)
    events = [
        PaymentEvent(
            int(r.transaction_id),
            int(r.customer_id),
            int(r.terminal_id),
            float(r.amount),
            int(r.event_timestamp.value // 1_000),
            0,
        )
        for r in mine.itertuples()
    ]
    rng = np.random.default_rng(6)
    order = rng.permutation(len(events))
    written = sum(states.apply([events[i]]) for i in order)
    assert written >= len(events)  # every first delivery changed the customer's state
    assert states.apply(events) == 0  # redelivered: nothing changes, nothing is written
    ((state, _),) = states.read("customer", [customer])
    want = _state_until(tx, "customer_id", customer, max(e.event_us for e in events), "customer")
    keep = np.isin(want.ids, [e.transaction_id for e in events])
    assert state.ids.tolist() == want.ids[keep].tolist()
