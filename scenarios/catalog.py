"""The failure stories: what each breaks, when, who should notice, what should happen.

The expectations here (detector, bound, actions) are what the scenario's test asserts
and what its report checks the run against, so a story that stops holding fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fraudlab.errors import ConfigError
from scenarios.faults import (
    AmountInCents,
    Exploration,
    Fault,
    KnownCardTesting,
    LeakyChallenger,
    MissingAsZero,
    NewFraudPattern,
    StaleFeatures,
    StreamWorkerStops,
    WindowMismatch,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    days: int  # simulated days of traffic after the champion's training cutoff
    fault: Fault
    full_days: int | None = None  # at --scale full, when the story wants longer
    inject_day: int | None = None  # scenario day the fault starts (at midnight)
    detector: str | None = None  # the monitor job that should catch it ("model": the model)
    detect_within_hours: float = 0.0  # bound on simulated time from injection to detection
    expected_actions: tuple[str, ...] = ()  # policy actions that must be taken, in order
    recovery: str = ""  # what "recovered" means for this story, in words
    baseline: str = "baseline"  # the healthy story on the same world (losses compare)
    what_broke: str = ""
    how_it_shows: str = ""
    design_answer: str = ""
    tags: tuple[str, ...] = field(default=())
    minute_jobs: bool = True  # the guardrails every few minutes (False: the daily jobs only)
    # Simulated minutes between minute-job runs; None: the policy's (minute_jobs.every_minutes).
    minute_jobs_every: float | None = None


_SKEW_ANSWER_TAIL = (
    "Skew is a code or pipeline defect, not a model problem: no retraining fixes it, and "
    "the fix is a revert. Catch it in minutes with what needs no label: inputs held to "
    "the bands of the model's own training reference (monitoring/guardrail.py), the "
    "online rows against the offline snapshot (monitoring/parity.py), each view's "
    "materialization watermark (monitoring/freshness.py); while the inputs are in doubt, "
    "a circuit breaker sends would-be declines to review. The daily job that recomputes "
    "logged features offline at the same timestamps (monitoring/skew.py) names every "
    "feature hit; drift can hint at it, but cannot tell a broken pipeline from a changed "
    "world."
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="baseline",
            title="Healthy traffic: how often does the monitor cry wolf?",
            days=14,
            full_days=28,
            fault=Fault(),
            # Minute jobs every 15 simulated minutes, the length of their window: the
            # windows tile the day, so every answer is judged by the guardrails exactly
            # once (at 5, three times, by three runs whose windows overlap by two thirds).
            # A false alarm is a window's finding, so its rate per run is what the story
            # measures either way; the 2,688 runs this saves were a third of its time.
            minute_jobs_every=15,
            recovery="nothing to recover from",
            what_broke=(
                "Nothing. Two weeks of ordinary traffic through the champion (four at "
                "`--scale full`)."
            ),
            how_it_shows=(
                "It should not show at all: every monitor run should find drift, skew, "
                "performance and the canary within policy. The run records the normal range "
                "of every monitored figure, the yardstick the incident runs are read against."
            ),
            design_answer=(
                "Before trusting any alert, measure its false-alarm rate on healthy traffic "
                "and know the normal range of each metric (weekly seasonality, how many "
                "labels have arrived). A monitor that alerts every weekend gets muted, and "
                "then it misses the real incident."
            ),
        ),
        Scenario(
            name="skew-amount-units",
            title="Training/serving skew: the gateway starts sending amounts in cents",
            days=3,
            fault=AmountInCents(),
            inject_day=1,
            detector="guardrail",
            detect_within_hours=0.25,
            expected_actions=("mitigate",),
            recovery="the on-call reverts the gateway change; skew is back within policy",
            what_broke=(
                "An upstream release of the payment gateway sends `amount` in cents. The "
                "API accepts it (a valid positive number) and the model, trained on currency "
                "units, sees every payment as 100 times larger."
            ),
            how_it_shows=(
                "`amount`, `log_amount` and the ratio to the customer's usual amount differ "
                "from their offline recomputation on every request (the system of record "
                "still says units); declines and reviews jump, and input drift fires too. "
                "The cents also go into the velocity state (the customer's 24-hour "
                "sums, means and maxima), which keeps them for a day after the revert: "
                "the breaker stays on until they age out."
            ),
            design_answer=(
                "Validate units and ranges at the edge, log the exact feature vector served, "
                "and compare it with the offline recomputation. " + _SKEW_ANSWER_TAIL
            ),
        ),
        Scenario(
            name="skew-stale-features",
            title="Training/serving skew: the materialization job stops",
            days=3,
            fault=StaleFeatures(),
            inject_day=1,
            detector="freshness",
            detect_within_hours=1,
            expected_actions=("alert",),
            recovery="the job is restarted and catches up; skew is back within policy",
            what_broke=(
                "The daily job that copies the midnight feature snapshot to the online "
                "store stops. Nothing errors: the online store keeps answering with "
                "yesterday's values, and after the TTL (2 days) with none at all."
            ),
            how_it_shows=(
                "The aggregates served (counts and means over 1, 7 and 30 days) disagree "
                "with their point-in-time values for most customers and terminals; later, "
                "explicit stale-feature fallbacks."
            ),
            design_answer=(
                "Freshness is a feature property: give every view a TTL, serve staleness "
                "as an explicit, counted fallback, and alert on the age of the newest "
                "online row as well as on skew. " + _SKEW_ANSWER_TAIL
            ),
        ),
        Scenario(
            name="skew-missing-default",
            title="Training/serving skew: a deploy fills missing features with 0",
            days=3,
            fault=MissingAsZero(),
            inject_day=1,
            detector="guardrail",
            detect_within_hours=1,
            expected_actions=("mitigate",),
            recovery="the deploy is rolled back; skew is back within policy",
            what_broke=(
                "A serving release adds `fillna(0)` to the feature vector. Training left "
                "missing values missing (a customer with no payment yesterday has no "
                "1-day mean), and the model learned what missing means."
            ),
            how_it_shows=(
                "The features that are legitimately missing for many customers (means over "
                "short windows) are 0 online and missing offline: only-one-side-missing "
                "mismatches on the affected features, and nothing else."
            ),
            design_answer=(
                "One definition of the feature vector, including its missing-value "
                "convention, shared by training and serving (here the model gets NaN both "
                "ways); parity tests that score the same rows through both paths. "
                + _SKEW_ANSWER_TAIL
            ),
        ),
        Scenario(
            name="skew-window-mismatch",
            title="Training/serving skew: an aggregate computed over another window online",
            days=3,
            fault=WindowMismatch(),
            inject_day=1,
            detector="parity",
            detect_within_hours=1,
            expected_actions=("alert",),
            recovery="the online job is fixed; skew is back within policy",
            what_broke=(
                "A separate online job (think: a streaming rewrite) computes "
                "`customer_mean_amount_7d` over the last 3 days, while the offline table "
                "the model trained on uses 7. Both look like plausible means."
            ),
            how_it_shows=(
                "Only `customer_mean_amount_7d` mismatches its offline value, on most "
                "customers; its drift test may stay quiet, because the two windows have "
                "similar distributions: only a row-by-row comparison sees it."
            ),
            design_answer=(
                "Define each aggregate once (Feast view + one batch job feeding both stores) "
                "instead of two implementations; if a streaming path is unavoidable, "
                "backfill the offline store from it. " + _SKEW_ANSWER_TAIL
            ),
        ),
        Scenario(
            name="drift-new-fraud-pattern",
            title="Concept drift: a card-testing attack the champion has never seen",
            days=29,
            fault=NewFraudPattern(),
            inject_day=1,
            # Told by the daily performance job and the canary: its minute jobs (the
            # canary's label-free guardrails) every 15 simulated minutes, not 5: a third
            # of the 8,352 runs that were most of its time.
            minute_jobs_every=15,
            detector="performance",
            detect_within_hours=24 * 14,
            expected_actions=("retrain", "promote"),
            recovery="a retrained challenger wins its canary and is promoted",
            what_broke=(
                "Fraudsters start testing stolen cards with bursts of tiny payments at "
                "random terminals. No pipeline is broken: the world changed, and the "
                "champion approves the new fraud because tiny amounts look safe."
            ),
            how_it_shows=(
                "First in the inputs (more tiny payments, bursts in the counts), then, as "
                "chargebacks arrive days to weeks later, in the frauds charged back among the "
                "payments the champion approved: several times what its held-out periods "
                "predict (`missed-fraud-excess`). The first "
                "retrains are refused by the gate while the new pattern's labels have not "
                "yet matured into a training window; a later one passes, goes to canary and "
                "is promoted on the paired shadow comparison."
            ),
            design_answer=(
                "Drift alone is a warning: labels decide. With delayed labels, the time to "
                "recover is bounded by label maturity plus the training calendar, not by "
                "how fast you can retrain; retrain when the fraud the model lets through "
                "exceeds its own held-out rate (measured on approved payments, whose labels "
                "no decline censors, rather than recall), gate offline, then canary, and "
                "count fraud losses meanwhile (rules or velocity features cover the gap)."
            ),
        ),
        Scenario(
            name="card-testing-velocity",
            title="Card testing the model has seen: velocity features catch it in minutes",
            days=3,
            fault=KnownCardTesting(),
            detector="model",
            detect_within_hours=1.0,
            baseline="card-testing-velocity",  # its own world: it is the healthy run there
            recovery="nothing to recover from: the model itself answers the attack",
            what_broke=(
                "Nothing is broken. Card testers have been at it for six weeks before the "
                "champion's cutoff, so its training labels hold their bursts: 3 to 8 tiny "
                "payments on one card, about a minute apart, at a random terminal."
            ),
            how_it_shows=(
                "In the champion's own decisions. The champion is LightGBM on fraud_v3, "
                "whose velocity features count the card's payments of the last 10 minutes "
                "up to the payment itself; LightGBM on fraud_v2 (daily snapshots only, "
                "yesterday's counts) is shadow-scored on the same payments. Per burst: "
                "how many of its payments each model let through before it first flagged one."
            ),
            design_answer=(
                "Labels come weeks late, so the monitor cannot stop an attack that unfolds "
                "in minutes: the model has to, from its features. Once the attack is in "
                "the training labels, a daily snapshot still sees a tiny payment at a "
                "far terminal, so the fraud_v2 model sends each test to an analyst; only a "
                "window that ends at the payment sees the burst itself, and the fraud_v3 "
                "model declines it outright, with nobody in the loop (what counts once "
                "review capacity is finite). That costs an update per payment and a "
                "stream to run (docs/serving-plane.md): measure what it buys on the same "
                "payments, as here, before paying for it."
            ),
            tags=("velocity",),
        ),
        Scenario(
            name="stream-worker-stopped",
            title="The stream worker stops: real-time features freeze, freshness pages in minutes",
            days=2,
            fault=StreamWorkerStops(),
            inject_day=1,
            detector="freshness",
            detect_within_hours=0.5,
            expected_actions=("alert",),
            baseline="card-testing-velocity",
            recovery="the worker is restarted, applies the backlog, and no view is stale",
            what_broke=(
                "The stream worker that applies every scored payment to the velocity state "
                "is killed at 08:30. The API keeps answering and publishing events to the "
                "stream; nothing errors, and every velocity feature freezes."
            ),
            how_it_shows=(
                "In the age the API logs per view with every answer: the velocity views' "
                "age is the stream's lag, which grows from zero with every minute the "
                "worker is down. The minute jobs run every 5 minutes of service time "
                "(minute_jobs.every_minutes) and pages; the daily skew job sees the "
                "frozen values only at midnight."
            ),
            design_answer=(
                "A real-time feature has a freshness objective of its own, and the "
                "pipeline's lag is measured where it is served: every answer logs each "
                "view's age, and a job that looks every few minutes alerts on the share "
                "of stale answers. Delivery at least once with an idempotent merge makes "
                "the restart safe: the backlog is applied, nothing is double counted, "
                "and the state is whole again."
            ),
            tags=("velocity", "freshness"),
        ),
        Scenario(
            name="bad-challenger-leaky",
            title="A bad model: trained with a leaky join, great offline, worse live",
            days=3,
            fault=LeakyChallenger(),
            inject_day=1,
            detector="guardrail",
            detect_within_hours=24,
            expected_actions=("rollback",),
            recovery="the canary is rolled back; the champion decides for everyone again",
            what_broke=(
                "A model is trained on a naive join: each payment gets the feature row "
                "with the terminal's fraud rate as finally known, labels from the future "
                "included. Its offline test set has the same leak, so it beats the champion "
                "by a mile. The gate scores it on point-in-time features too and refuses "
                "it; someone overrides the gate and sends it out as a 30% canary anyway."
            ),
            how_it_shows=(
                "Live, it sees point-in-time features only, and behaves nothing like its "
                "own reference: the guardrail job, every five minutes, holds its decisions "
                "and scores (canary answers and shadow scores) to its reference and to the "
                "champion's decisions on the same payments, long before any chargeback "
                "arrives."
            ),
            design_answer=(
                "Offline evaluation is only as honest as the join: build training sets "
                "point-in-time (labels as known at the time), and have the gate check what "
                "it already computed (a model far worse on point-in-time features than on "
                "its own test set learned from a leak). Then never trust offline numbers "
                "alone: shadow, a small canary with label-free guardrails that roll back "
                "in minutes, and promotion on matured labels with a sequential test."
            ),
        ),
        Scenario(
            name="feedback-loop",
            title="The feedback loop: the labels are chosen by the model's own decisions",
            days=14,
            full_days=28,
            fault=Exploration(share=0.2),
            inject_day=3,
            minute_jobs=False,  # the story is in the daily performance job's labels
            recovery=(
                "once the explored declines' chargebacks are in, the weighted recall "
                "reads the model's recall closer than the labels alone"
            ),
            what_broke=(
                "Nothing breaks. The API approves 20% of the payments the model would "
                "review or decline, at random, and logs each answer's propensity "
                "(`serving.exploration_share`); for the first three days it does not. As in "
                "every story, each midnight the world settles each served payment by the "
                "decision its caller got (`fraudlab labels settle`): a declined fraud never "
                "becomes a chargeback, a reviewed one is judged by an analyst within hours, "
                "an approved one is charged back days or weeks later, or never."
            ),
            how_it_shows=(
                "The performance job's recall is measured on the frauds whose labels "
                "arrived, and the frauds the model declines never get one: read naively, "
                "the labels say the model misses far more than it does. With exploration, "
                "a random fifth of the model's declines go through; their chargebacks, "
                "each weighted by one over the chance that its label is known by now "
                "(explored, and reported at its age), stand for the declined frauds no "
                "label names (`ipw_recall`). The price is the frauds exploration lets "
                "through. The retrain rule reads neither recall: it counts the frauds "
                "among the payments the model approved, which no decline censors, so the "
                "sinking naive recall does not trigger a retrain on labels its own "
                "declines chose."
            ),
            design_answer=(
                "Labels are a product of the last model's decisions: declined fraud is "
                "censored, so a model retrained or judged on what it let through learns "
                "that what it blocks is fine, and its reported recall understates the "
                "truth. Say so first, then the fixes: keep a small random exploration "
                "share with logged propensities (a holdout that is approved on purpose), "
                "judge models by inverse-propensity weighting on it, retrain with the "
                "weights, use the analysts' verdicts as fast labels, and price the "
                "exploration (its fraud losses) against the bias it removes. "
                "`fraudlab feedback-loop` prints what censoring and exploration do to a "
                "retrained model on the same data."
            ),
        ),
    ]
}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]
