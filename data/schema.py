"""The transactions table contract: what the simulator writes and a user may bring.

| column              | type                     | meaning                                         |
|---------------------|--------------------------|-------------------------------------------------|
| transaction_id      | int64, unique, >= 0      | payment id                                      |
| event_timestamp     | timestamp[us, UTC]       | when the payment happened                       |
| customer_id         | int64, >= 0              | the card holder (Feast entity `customer`)       |
| terminal_id         | int64, >= 0              | the merchant terminal (Feast entity `terminal`) |
| amount              | float64, > 0, < 1e6      | payment amount in currency units                |
| is_fraud            | int8, 0 or 1             | ground truth                                    |
| label_available_at  | timestamp[us, UTC], null | when the fraud label became known (chargeback); |
|                     |                          | for legitimate payments, when the chargeback    |
|                     |                          | window closed; null = fraud never reported      |

Optional column written by the simulator: `fraud_pattern` (string, "" for legitimate).
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

TRANSACTIONS_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.int64(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("terminal_id", pa.int64(), nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("is_fraud", pa.int8(), nullable=False),
        pa.field("label_available_at", TIMESTAMP, nullable=True),
    ]
)

OPTIONAL_COLUMNS = {"fraud_pattern": pa.string()}

REQUIRED_COLUMNS = tuple(TRANSACTIONS_SCHEMA.names)
MAX_AMOUNT = 1_000_000.0
