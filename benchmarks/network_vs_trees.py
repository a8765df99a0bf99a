"""When not to use a neural network: a small one against the production LightGBM, on
the demo's point-in-time training set.

Reads the home of `make demo` (`.fraudlab/`, or FRAUDLAB_HOME), builds the default
feature service's training set as `fraudlab train` does (pipelines/train.py
`run_training`: the same split, join and label feed) and fits on it, registering nothing:

- LightGBM, the production model (pipelines/train.py `fit_model`: `train_lightgbm`);
- an `MLPClassifier` behind the baseline's input preparation (median imputation with
  missing indicators, scaling), early stopped on the validation period's AP as LightGBM
  is, NumPy's BLAS on one thread (faster for its small matrices on 2 shared cores).

For each: test-period AP with the gate's 90% paired bootstrap interval of network minus
LightGBM (pipelines/evaluate.py); training wall time, the best of `--train-repeats`
interleaved fits; scoring latency for one row (p50 and p99 over `--rounds` calls, the
models in turn on the same rows) and for the test period as one batch (median of three).
One row goes through serving's call for LightGBM (serving/scoring.py `BoosterScorer`,
one thread) and `predict_proba` for the network; pipelines/models.py `score` (OpenMP
threads) is shown beside. Last line: `network_vs_trees service=S train_rows=N
test_rows=N ap_lightgbm=X ap_network=X delta_ap=X ci_low=X ci_high=X train_ratio=X
p50_ratio=X p99_ratio=X batch_ratio=X` (network over LightGBM, measured in this run).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import lightgbm as lgb
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from fraudlab.settings import Settings
    from pipelines.evaluate import GateComparison

ROOT = Path(__file__).resolve().parents[1]

# The network's settings, chosen once and not tuned (LightGBM's are not tuned here either):
HIDDEN_LAYERS = (32, 16)  # ~2.4k weights for ~330 known frauds: more would learn them by heart
L2_PENALTY = 1e-3  # ten times sklearn's default, for the same reason
BATCH_SIZE = 512  # fewer Python-level steps per epoch than sklearn's 200, on 2 cores
MAX_EPOCHS = 60  # a ceiling; early stopping ends the demo's runs well before it
PATIENCE = 5  # epochs without a better validation AP before stopping, as LightGBM's 40 rounds
BATCH_REPEATS = 3  # the whole test period each time: a few suffice for a median
WARMUP_CALLS = 50  # first calls allocate and fill caches; not what serving sees

Matrix = npt.NDArray[np.float64]
Progress = Callable[[str], None]
Scorer = Callable[[Matrix], object]  # a 1-D row, or a batch of rows, in; scores out


@dataclass(frozen=True)
class Measured:
    model: str
    average_precision: float
    train_s: float
    row_p50_us: float
    row_p99_us: float
    batch_ms: float


def progress_printer() -> Progress:
    """One line a step, with the seconds since the run began."""
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {message}", flush=True)

    return say


def training_parts(
    settings: Settings, service_name: str, progress: Progress
) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """The service's features in order and its training set by period, built as
    `run_training` builds it: the same inputs, split, join and label feed."""
    from data.labels import read_label_feed
    from features.store import feature_service, open_store, service_features
    from fraudlab.errors import MissingInput
    from pipelines.train import load_inputs, make_split
    from pipelines.training_set import build_training_frame

    tx = load_inputs(settings)
    store = open_store(settings)
    entity_features, request_features = service_features(feature_service(store, service_name))
    split = make_split(settings, tx, settings.training.cutoff_day)
    progress(f"building the pit training set of {service_name} ({split.describe()})")
    label_events = read_label_feed(settings.label_feed_path, tx)
    frame = build_training_frame(store, tx, split, service_name, "pit", label_events)
    parts = {p: frame[frame["period"] == p] for p in ("train", "validation", "test")}
    for period, part in parts.items():
        if part["label"].sum() == 0:
            raise MissingInput(f"the {period} period has no known fraud: generate more data")
    return entity_features + request_features, parts


def train_network(
    parts: dict[str, pd.DataFrame], features: list[str], seed: int, progress: Progress
) -> Pipeline:
    """The MLP in a Pipeline, early stopped on the validation period's AP.

    Not sklearn's own `early_stopping`: it holds out a random tenth of the training rows
    (payments from the same days as the rest, unlike the time split) and watches
    accuracy, which at a 0.4% fraud rate hardly moves, so it stops on noise. Here each
    epoch is one `partial_fit` pass and the best epoch on the validation period is kept,
    the metric and rows LightGBM's early stopping watches. No class weights: like the
    baseline's, the score stays a probability, and AP only reads its order.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import average_precision_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipelines.models import feature_matrix

    train, valid = parts["train"], parts["validation"]
    # The baseline's preparation (train_logreg): a network needs no NaN and inputs on one
    # scale; the indicators keep "no history" visible instead of a median.
    prepare = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
    )
    z_train = prepare.fit_transform(feature_matrix(train, features))
    z_valid = prepare.transform(feature_matrix(valid, features))
    y_train, y_valid = train["label"].to_numpy(), valid["label"].to_numpy()
    network = MLPClassifier(
        hidden_layer_sizes=HIDDEN_LAYERS,
        alpha=L2_PENALTY,
        batch_size=BATCH_SIZE,
        early_stopping=False,  # ours, below
        random_state=seed,
    )
    best, best_ap, best_epoch, epoch = network, -1.0, 0, 0
    for epoch in range(1, MAX_EPOCHS + 1):
        network.partial_fit(z_train, y_train, classes=[0, 1])
        ap = float(average_precision_score(y_valid, network.predict_proba(z_valid)[:, 1]))
        if ap > best_ap:
            best, best_ap, best_epoch = copy.deepcopy(network), ap, epoch
        elif epoch - best_epoch >= PATIENCE:
            break
    progress(f"network: best validation AP {best_ap:.3f} at epoch {best_epoch} of {epoch}")
    return Pipeline([*prepare.steps, ("mlpclassifier", best)])


def interleaved_seconds(
    scorers: dict[str, Scorer], inputs: Matrix, calls: int
) -> dict[str, npt.NDArray[np.float64]]:
    """Seconds per call, `calls` each, cycling through `inputs` (rows, or one batch). Each
    round scores one input with every scorer, in alternating order: a busy machine slows
    all alike, and none always runs on another's warm caches. Warm-up calls go untimed."""
    names = list(scorers)
    for i in range(min(WARMUP_CALLS, len(inputs))):
        for name in names:
            scorers[name](inputs[i])
    seconds = {name: np.empty(calls) for name in names}
    for i in range(calls):
        given = inputs[i % len(inputs)]
        for name in names if i % 2 == 0 else reversed(names):
            started = time.perf_counter()
            scorers[name](given)
            seconds[name][i] = time.perf_counter() - started
    return seconds


def print_table(
    lightgbm: Measured, network: Measured, versus: GateComparison, batch_rows: int
) -> None:
    header = (
        f"{'model':<20}{'test AP':>9}  {'network - LightGBM [90% CI]':<30}{'train s':>9}"
        f"{'1 row p50 us':>14}{'1 row p99 us':>14}{f'{batch_rows:,} rows ms':>16}"
    )
    from fraudlab.commands.training_report import (
        gate_interval,  # how `fraudlab train` prints the gate's
    )

    print(header)
    print("-" * len(header))
    interval = gate_interval(versus)
    for measured, compared in ((lightgbm, ""), (network, interval)):
        print(
            f"{measured.model:<20}{measured.average_precision:>9.3f}  {compared:<30}"
            f"{measured.train_s:>9.1f}{measured.row_p50_us:>14.0f}{measured.row_p99_us:>14.0f}"
            f"{measured.batch_ms:>16.1f}"
        )
    ratios = [
        network.train_s / lightgbm.train_s,
        network.row_p50_us / lightgbm.row_p50_us,
        network.row_p99_us / lightgbm.row_p99_us,
        network.batch_ms / lightgbm.batch_ms,
    ]
    print(
        f"{'network / LightGBM':<20}{'':>9}  {'':<30}{ratios[0]:>8.1f}x{ratios[1]:>13.1f}x"
        f"{ratios[2]:>13.1f}x{ratios[3]:>15.1f}x"
    )


def fit_both(
    parts: dict[str, pd.DataFrame], features: list[str], seed: int, repeats: int, say: Progress
) -> tuple[lgb.Booster, Pipeline, dict[str, float]]:
    """Both models fitted `repeats` times in turn, and each one's least wall time: the fits
    are deterministic, and on shared cores the least time is the nearest to the model's."""
    from pipelines.train import fit_model

    seconds: dict[str, list[float]] = {"lightgbm": [], "network": []}
    for repeat in range(1, repeats + 1):
        say(f"fit {repeat}/{repeats}: lightgbm on {len(parts['train']):,} payments")
        started = time.perf_counter()
        booster = fit_model("lightgbm", parts, features, seed)
        seconds["lightgbm"].append(time.perf_counter() - started)
        say(f"lightgbm: {booster.best_iteration} rounds in {seconds['lightgbm'][-1]:.1f} s")
        started = time.perf_counter()
        network = train_network(parts, features, seed, say)
        seconds["network"].append(time.perf_counter() - started)
        say(f"network {HIDDEN_LAYERS}: {seconds['network'][-1]:.1f} s")
    return booster, network, {name: min(times) for name, times in seconds.items()}


def summary_line(
    service_name: str,
    parts: dict[str, pd.DataFrame],
    lightgbm: Measured,
    network: Measured,
    versus: GateComparison,
) -> str:
    return (
        f"network_vs_trees service={service_name} train_rows={len(parts['train'])} "
        f"test_rows={len(parts['test'])} ap_lightgbm={lightgbm.average_precision:.4f} "
        f"ap_network={network.average_precision:.4f} delta_ap={versus.delta_ap:.4f} "
        f"ci_low={versus.ci_low:.4f} ci_high={versus.ci_high:.4f} "
        f"train_ratio={network.train_s / lightgbm.train_s:.2f} "
        f"p50_ratio={network.row_p50_us / lightgbm.row_p50_us:.2f} "
        f"p99_ratio={network.row_p99_us / lightgbm.row_p99_us:.2f} "
        f"batch_ratio={network.batch_ms / lightgbm.batch_ms:.2f}"
    )


def run(rounds: int, bootstrap_rounds: int | None, train_repeats: int) -> None:
    from sklearn.metrics import average_precision_score
    from threadpoolctl import threadpool_limits

    from fraudlab.settings import get_settings
    from pipelines.evaluate import Clusters, bootstrap_ap_difference
    from pipelines.models import feature_matrix, score
    from serving.scoring import BoosterScorer

    # The network's best setting here: NumPy's BLAS on one thread. Its matrices are small
    # (512 rows x 58 inputs x 32 units), and on 2 shared cores two BLAS threads made an
    # epoch slower and noisier (0.6 to 1.8 s against 0.3 to 0.4 s). LightGBM sets its own.
    threadpool_limits(limits=1, user_api="blas")
    say = progress_printer()
    settings = get_settings()
    service_name, seed = settings.training.feature_service, settings.simulation.seed
    features, parts = training_parts(settings, service_name, say)
    booster, network, train_s = fit_both(parts, features, seed, train_repeats, say)
    x_test, labels = feature_matrix(parts["test"], features), parts["test"]["label"].to_numpy()
    scores = {"lightgbm": score(booster, x_test), "network": score(network, x_test)}
    drawn = bootstrap_rounds or settings.training.bootstrap_rounds
    say(f"bootstrapping network minus lightgbm AP over {drawn} resamples of days x cards")
    versus = bootstrap_ap_difference(
        labels,
        scores["network"],
        scores["lightgbm"],
        drawn,
        seed,
        clusters=Clusters.of(parts["test"]),
    )
    say(f"timing {rounds:,} single-row calls per model, interleaved")
    single = interleaved_seconds(
        {
            "lightgbm": BoosterScorer(booster),
            "lightgbm score()": lambda row: score(booster, row.reshape(1, -1)),
            "network": lambda row: network.predict_proba(row.reshape(1, -1)),
        },
        x_test,
        rounds,
    )
    say(f"timing the test period as one batch of {len(x_test):,} rows, {BATCH_REPEATS} times")
    batch = interleaved_seconds(
        {"lightgbm": lambda x: score(booster, x), "network": lambda x: score(network, x)},
        x_test[np.newaxis],
        BATCH_REPEATS,
    )
    measured = {
        name: Measured(
            name,
            float(average_precision_score(labels, scores[name])),
            train_s[name],
            float(np.percentile(single[name], 50) * 1e6),
            float(np.percentile(single[name], 99) * 1e6),
            float(np.median(batch[name]) * 1e3),
        )
        for name in ("lightgbm", "network")
    }
    print()
    print_table(measured["lightgbm"], measured["network"], versus, len(x_test))
    threaded = single["lightgbm score()"] * 1e6
    print(
        f"(one row: lightgbm through serving's BoosterScorer; through pipelines.models.score, "
        f"p50 {np.percentile(threaded, 50):.0f} us, p99 {np.percentile(threaded, 99):.0f} us)"
    )
    print(summary_line(service_name, parts, measured["lightgbm"], measured["network"], versus))


def main() -> None:
    # benchmarks/serving.py shares its name with the `serving` package this imports.
    sys.path.insert(0, str(ROOT))
    from benchmarks._arguments import at_least_one

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=at_least_one, default=2_000, help="single-row calls per model"
    )
    parser.add_argument(
        "--bootstrap-rounds",
        type=at_least_one,
        help="resamples for the AP interval (default: the gate's, from the settings)",
    )
    parser.add_argument(
        "--train-repeats", type=at_least_one, default=2, help="interleaved fits per model"
    )
    args = parser.parse_args()
    from fraudlab.errors import FraudlabError

    try:
        run(args.rounds, args.bootstrap_rounds, args.train_repeats)
    except FraudlabError as exc:  # e.g. no demo home yet: one line, not a traceback
        raise SystemExit(f"network_vs_trees: {exc}") from None


if __name__ == "__main__":
    main()
