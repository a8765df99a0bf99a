"""Metrics per slice: a model can hold its total while one kind of fraud or one kind of
customer falls through, and the total will not say so.

Three cuts, each a question a fraud team is asked:
- fraud pattern (the simulator's `fraud_pattern`; a real bank has the chargeback's
  reason code): which attacks does it catch? Recall at the review threshold, and the
  average precision of that pattern's frauds against all legitimate payments;
- light vs regular card (under LIGHT_CARD_PAYMENTS payments in the 30 days before, from
  the point-in-time `customer_tx_count_30d`): the cards with little history to compare
  a payment with. It stands in for new vs returning customers: the simulator's
  customers all exist from day 0, so after the warm-up no card is new (a handful of
  payments a test period); on a bank's data the same cut catches the cold start;
- amount band: the small payments where card testing hides, the large ones where the
  money is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score

FloatArray = npt.NDArray[np.float64]
AMOUNT_BANDS = ((0.0, 20.0), (20.0, 200.0), (200.0, math.inf))
LIGHT_CARD_PAYMENTS = 20  # about 3% of the demo's payments come from such cards


@dataclass(frozen=True)
class SliceRow:
    cut: str  # "fraud pattern", "card", "amount"
    name: str
    payments: int
    frauds: int
    average_precision: float  # NaN without both classes
    recall: float  # share of its known frauds at or above the review threshold

    @property
    def key(self) -> str:
        """A metric-name-safe id: "amount_20_200", "fraud_pattern_leaked_card"."""
        raw = f"{self.cut}_{self.name}".replace(" ", "_").replace("-", "_").replace("+", "up")
        return "".join(c for c in raw if c.isalnum() or c == "_")


def band_name(low: float, high: float) -> str:
    return f"{low:g}+" if math.isinf(high) else f"{low:g}-{high:g}"


def slice_masks(frame: pd.DataFrame) -> list[tuple[str, str, npt.NDArray[np.bool_]]]:
    """(cut, slice, rows) for every slice the frame's columns allow."""
    out: list[tuple[str, str, npt.NDArray[np.bool_]]] = []
    if "customer_tx_count_30d" in frame:
        light = frame["customer_tx_count_30d"].fillna(0).to_numpy() < LIGHT_CARD_PAYMENTS
        name = f"light (<{LIGHT_CARD_PAYMENTS} in 30 d)"
        out += [("card", name, light), ("card", "regular", ~light)]
    amount = frame["amount"].to_numpy()
    for low, high in AMOUNT_BANDS:
        out.append(("amount", band_name(low, high), (amount >= low) & (amount < high)))
    return out


def slice_metrics(
    frame: pd.DataFrame, scores: FloatArray, review_threshold: float, label: str = "label"
) -> list[SliceRow]:
    y = frame[label].to_numpy().astype(bool)
    flagged = np.asarray(scores) >= review_threshold
    rows = []
    if "fraud_pattern" in frame:
        pattern = frame["fraud_pattern"].fillna("").to_numpy()
        for name in sorted(set(pattern[y]) - {""}):
            # The pattern's frauds against every legitimate payment: how well it ranks them.
            rows.append(_row("fraud pattern", name, (pattern == name) | ~y, y, flagged, scores))
    for cut, name, mask in slice_masks(frame):
        rows.append(_row(cut, name, mask, y, flagged, scores))
    return rows


def _row(
    cut: str,
    name: str,
    mask: npt.NDArray[np.bool_],
    y: npt.NDArray[np.bool_],
    flagged: npt.NDArray[np.bool_],
    scores: FloatArray,
) -> SliceRow:
    ys, frauds = y[mask], int(y[mask].sum())
    both = 0 < frauds < len(ys)
    return SliceRow(
        cut,
        name,
        int(mask.sum()) if cut != "fraud pattern" else frauds,
        frauds,
        float(average_precision_score(ys, np.asarray(scores)[mask])) if both else math.nan,
        float((flagged[mask] & ys).sum() / frauds) if frauds else math.nan,
    )
