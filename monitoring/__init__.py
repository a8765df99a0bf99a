"""Evaluation and operations planes: jobs over the prediction log (drift, skew,
delayed-label performance, canary analysis), the policy that turns their findings into
actions, and the decision log that records both."""

import features  # noqa: F401  (first: Feast's import-time instrumentation, see there)
