"""How long does serving's online lookup take, against Feast's own get_online_features?

Builds a small world in a temporary folder (simulated payments, feature tables, the
online store filled at the last snapshot: pipelines/world.py), then looks up the
features of fraud_v2 for the same payments two ways, interleaved in rounds so a busy
machine slows both alike:

- ours: `serving.features.OnlineFeatures._entity_values` (what the API's request path
  calls): the provider's `online_read` per view on SQLite; on Redis every view in one
  pipeline, one round trip;
- Feast: `FeatureStore.get_online_features(...).to_dict()` with the same features and
  entity keys (the documented way), which also assembles a response.

Both return the same values (checked on every payment). Prints p50/p99 per lookup and,
last, `online_lookup store=S lookups=N ours_p50_ms=X feast_p50_ms=X ratio=R` where R is
Feast's p50 over ours.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "fraud_v2"
DAYS = 40


def main() -> None:
    # benchmarks/serving.py shares its name with the `serving` package this imports.
    sys.path.insert(0, str(ROOT))
    from benchmarks._arguments import at_least_one

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=at_least_one, default=2_000, help="per way")
    parser.add_argument("--rounds", type=at_least_one, default=4, help="interleaved rounds")
    parser.add_argument(
        "--redis",
        help="a Redis to use as the online store instead, e.g. 127.0.0.1:6379,db=12 (written)",
    )
    args = parser.parse_args()
    from data.simulator import SimulationConfig
    from features.store import feature_service, open_store
    from fraudlab.settings import Settings
    from pipelines.world import WorldBuilder, WorldRecipe
    from serving.features import OnlineFeatures

    with tempfile.TemporaryDirectory(prefix="online_lookup_") as home:
        settings = Settings(home=Path(home))
        if args.redis:
            settings = settings.model_copy(
                update={"profile": "production", "redis_connection": args.redis}
            )
        simulation = SimulationConfig(
            customers=2_000, terminals=4_000, days=DAYS, seed=3, start_date=date(2026, 1, 1)
        )
        world = WorldBuilder(settings, WorldRecipe(simulation, cutoff_day=DAYS - 1)).build()
        store = open_store(settings)
        service = feature_service(store, SERVICE)
        refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
        ours = OnlineFeatures(store, refs)
        after = world.transactions[world.transactions["event_timestamp"] >= world.cutoff]
        payments = after.head(args.lookups)
        rows = list(payments[["customer_id", "terminal_id", "event_timestamp"]].itertuples())
        times: dict[str, list[float]] = {"ours": [], "feast": []}
        per_round = max(1, len(rows) // args.rounds)
        for start in range(0, len(rows), per_round):
            for row in rows[start : start + per_round]:
                customer, terminal = int(row.customer_id), int(row.terminal_id)
                t0 = time.perf_counter()
                values, _, _ = ours._entity_values(customer, terminal, row.event_timestamp)
                t1 = time.perf_counter()
                theirs = store.get_online_features(
                    features=refs, entity_rows=[{"customer_id": customer, "terminal_id": terminal}]
                ).to_dict()
                t2 = time.perf_counter()
                times["ours"].append((t1 - t0) * 1e3)
                times["feast"].append((t2 - t1) * 1e3)
                for ref in refs:
                    name = ref.split(":", 1)[1]
                    a, b = values[name], theirs[name][0]
                    assert (np.isnan(a) and b is None) or a == b, (name, a, b)
        kind = settings.online_store_type
        print(f"{len(rows):,} lookups of {len(refs)} features ({SERVICE}), {kind} online store:")
        for way, ms in times.items():
            p50, p99 = np.percentile(ms, [50, 99])
            print(f"  {way:<6} p50 {p50:.3f} ms   p99 {p99:.3f} ms")
        ours_p50, feast_p50 = (float(np.percentile(times[w], 50)) for w in ("ours", "feast"))
        print(
            f"online_lookup store={kind} lookups={len(rows)} ours_p50_ms={ours_p50:.3f} "
            f"feast_p50_ms={feast_p50:.3f} ratio={feast_p50 / ours_p50:.2f}"
        )


if __name__ == "__main__":
    main()
