"""Freshness: were the feature values serving used as recent as each view promises?

Every answer logs, per view it read, the age of the value at the payment
(serving/features.py): a midnight snapshot's time since its midnight, a velocity
view's the stream's lag (0 when the API updates the state itself). A view is stale on
a request when that age is past its objective in the policy; the view breaks its
objective when more than the allowed share of the window's requests are stale.

A stuck materialization shows here within the objective's slack, a stopped stream
worker within the velocity objective (a minute), both long before a daily skew job
would see the values drift apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.findings import Finding
from monitoring.policy import FreshnessConfig
from serving.prediction_log.reader import AGE_PREFIX


def run_freshness(requests: pd.DataFrame, config: FreshnessConfig, out_dir: Path) -> Finding:
    """Per view: requests that read it, the share past its objective, and the ages."""
    ages = {c.removeprefix(AGE_PREFIX): requests[c] for c in requests if c.startswith(AGE_PREFIX)}
    table = []
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
            }
        )
    if len(requests) < config.min_requests or not table:
        finding = Finding(
            job="freshness",
            status="insufficient_data",
            summary=f"{len(requests)} requests with feature ages in the window "
            f"(fewer than {config.min_requests}, or no view with an objective)",
        )
        return finding.saved(out_dir)
    broken = [row["view"] for row in table if row["breaks_objective"]]
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
    return finding.saved(out_dir)
