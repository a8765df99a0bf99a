"""Freshness: were the feature values serving used as recent as each view promises?

Every answer logs, per view it read, the age of the value at the payment
(serving/features.py): a midnight snapshot's time since its midnight, a velocity
view's the stream's lag (0 when the API updates the state itself). A view is stale on
a request when that age is past its objective in the policy; the view breaks its
objective when more than the allowed share of the window's requests are stale.

A snapshot view is also held to its objective with no traffic at all: Feast's
registry records how far each view was materialized, and `now` minus that watermark is
the age every answer would be served at now. So a materialization that did not run
shows within the objective's slack (30 minutes past midnight), a stopped stream worker
within the velocity objective (a minute), both long before a daily skew job would see
the values drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monitoring.findings import Finding

if TYPE_CHECKING:
    from feast import FeatureView

from monitoring.policy import FreshnessConfig
from serving.prediction_log.reader import AGE_PREFIX


def materialized_ages(views: dict[str, FeatureView], now: pd.Timestamp) -> dict[str, float]:
    """Seconds from each view's materialization watermark (Feast's registry) to `now`."""
    ages = {}
    for name, view in views.items():
        end = view.most_recent_end_time
        if end is not None:
            end_at = pd.Timestamp(end)
            end_at = end_at.tz_localize("UTC") if end_at.tzinfo is None else end_at
            ages[name] = (now - end_at).total_seconds()
    return ages


def run_freshness(
    requests: pd.DataFrame,
    config: FreshnessConfig,
    out_dir: Path | None,
    watermark_ages: dict[str, float] | None = None,
) -> Finding:
    """Per view: requests that read it, the share past its objective, and the ages;
    per materialized view, its watermark's age (`watermark_ages`)."""
    ages = {c.removeprefix(AGE_PREFIX): requests[c] for c in requests if c.startswith(AGE_PREFIX)}
    table: list[dict[str, Any]] = []
    for view, age in sorted((watermark_ages or {}).items()):
        objective = config.objectives_seconds.get(view)
        if objective is not None:
            table.append(
                {
                    "view": view,
                    "objective_seconds": objective,
                    "requests": 0,
                    "stale_share": float(age > objective),
                    "median_age_seconds": age,
                    "max_age_seconds": age,
                    "breaks_objective": age > objective,
                    "measured": "materialization watermark",
                }
            )
    for view, age in sorted(ages.items()):
        read = age.dropna().to_numpy(np.float64)
        objective = config.objectives_seconds.get(view)
        if objective is None or len(read) == 0:
            continue
        stale = float((read > objective).mean())
        table.append(
            {
                "view": view,
                "objective_seconds": objective,
                "requests": len(read),
                "stale_share": stale,
                "median_age_seconds": float(np.median(read)),
                "max_age_seconds": float(read.max()),
                "breaks_objective": stale > config.stale_share_above,
                "measured": "served ages",
            }
        )
    stale_watermark = any(row["breaks_objective"] and not row["requests"] for row in table)
    if (len(requests) < config.min_requests and not stale_watermark) or not table:
        finding = Finding(
            job="freshness",
            status="insufficient_data",
            summary=f"{len(requests)} requests with feature ages in the window "
            f"(fewer than {config.min_requests}, or no view with an objective)",
        )
        return finding.saved(out_dir) if out_dir else finding
    broken = list(dict.fromkeys(row["view"] for row in table if row["breaks_objective"]))
    worst = max(table, key=lambda row: row["stale_share"])
    summary = (
        f"{len(broken)} of {len(table)} views past their freshness objective on more than "
        f"{config.stale_share_above:.0%} of {len(requests):,} requests"
        + (f": {', '.join(broken)}" if broken else "")
        + f" (worst {worst['view']}: {worst['stale_share']:.1%} stale, "
        f"oldest {worst['max_age_seconds']:,.0f} s against {worst['objective_seconds']:,.0f} s)"
    )
    finding = Finding(
        job="freshness",
        status="ok",
        summary=summary,
        metrics={
            "stale_view_count": float(len(broken)),
            "worst_stale_share": float(worst["stale_share"]),
        },
        details={"views": table, "stale_views": broken},
    )
    return finding.saved(out_dir) if out_dir else finding
