"""Training, the MLflow registry and the offline gate, against a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from fraudlab.settings import Settings
from pipelines.registry import CHALLENGER, CHAMPION, alias_version, connect, set_alias
from pipelines.train import TrainingOutcome, run_training
from tests.conftest import World


def _own_registry(world: World, folder: Path) -> Settings:
    """The shared world's data and features, with an MLflow store of the test's own."""
    return world.settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}
    )


@pytest.fixture(scope="module")
def trained(world: World, tmp_path_factory: pytest.TempPathFactory):
    settings = _own_registry(world, tmp_path_factory.mktemp("registry"))
    # The baseline on the small service first (champion), then LightGBM on all features.
    (baseline,) = run_training(settings, ["logreg"], "fraud_v1")
    (lgbm,) = run_training(settings, ["lightgbm"], "fraud_v2")
    return settings, {"logreg": baseline, "lightgbm": lgbm}


def test_first_version_becomes_champion(trained) -> None:
    settings, outcomes = trained
    client = connect(settings)
    assert outcomes["logreg"].alias == CHAMPION
    assert outcomes["logreg"].gate is None
    assert alias_version(client, "fraud-detector", CHAMPION) == outcomes["logreg"].version


def test_better_model_passes_the_gate_and_becomes_challenger(trained) -> None:
    settings, outcomes = trained
    lgbm: TrainingOutcome = outcomes["lightgbm"]
    assert lgbm.gate is not None and lgbm.gate.rounds >= 90
    assert lgbm.gate.ci_low <= lgbm.gate.delta_ap <= lgbm.gate.ci_high
    assert lgbm.metrics["average_precision"] > outcomes["logreg"].metrics["average_precision"]
    assert lgbm.gate.candidate_wins and lgbm.alias == CHALLENGER
    assert alias_version(connect(settings), "fraud-detector", CHALLENGER) == lgbm.version


def test_metrics_are_computed_not_placeholders(trained) -> None:
    _, outcomes = trained
    for o in outcomes.values():
        m = o.metrics
        assert 0 < m["average_precision"] < 1 and 0.5 < m["roc_auc"] < 1
        assert 0 <= m["recall_at_1pct_fpr"] <= 1 and 0 <= m["precision_at_capacity"] <= 1
        assert 0 < m["expected_cost"] < m["cost_without_model"]
        assert 0 < m["brier"] < 0.25
        assert 0 < o.thresholds.review <= o.thresholds.decline <= 1


def test_registered_version_carries_what_serving_and_monitoring_need(trained) -> None:
    settings, outcomes = trained
    connect(settings)
    client = MlflowClient()
    version = client.get_model_version("fraud-detector", outcomes["lightgbm"].version)
    for tag in (
        "features",
        "feature_service",
        "threshold_review",
        "threshold_decline",
        "train_period",
        "labels_as_of",
        "data_fingerprint",
        "code_version",
        "flavor",
    ):
        assert version.tags.get(tag), f"missing tag {tag}"
    assert version.tags["feature_service"] == "fraud_v2"
    assert version.tags["features"].split(",")[0] == "customer_tx_count_1d"
    run_files = {f.path for f in client.list_artifacts(version.run_id, "reference")}
    assert "reference/reference_sample.parquet" in run_files
    plots = {f.path for f in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/pr_curve.png", "plots/calibration.png", "plots/feature_importance.png"} <= plots
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/fraud-detector/{version.version}")
    assert info.signature is not None and info.saved_input_example_info is not None


def test_gate_refuses_a_worse_model(trained) -> None:
    settings, outcomes = trained
    client = connect(settings)
    set_alias(client, "fraud-detector", CHAMPION, outcomes["lightgbm"].version)
    challenger_before = alias_version(client, "fraud-detector", CHALLENGER)
    (weaker,) = run_training(settings, ["logreg"], "fraud_v1")
    assert weaker.gate is not None and not weaker.gate.candidate_wins
    assert weaker.gate.delta_ap < 0 and weaker.alias is None
    assert alias_version(client, "fraud-detector", CHALLENGER) == challenger_before


def test_naive_join_run_is_tagged_leaky_and_the_gate_refuses_it(
    world: World, tmp_path: Path
) -> None:
    settings = _own_registry(world, tmp_path)
    (leaky,) = run_training(settings, ["lightgbm"], "fraud_v2", join="naive")
    client = connect(settings)
    assert client.get_run(leaky.run_id).data.tags["leaky"] == "true"
    assert client.get_model_version("fraud-detector", leaky.version).tags["join"] == "naive"
    # It looks far better on its own leaky test set than on the features serving will see.
    assert leaky.point_in_time_metrics is not None
    honest_ap = leaky.point_in_time_metrics["average_precision"]
    assert leaky.metrics["average_precision"] > honest_ap + 0.2
    # ... the leak signature: the gate gives it no alias, not even as the first version.
    assert leaky.alias is None and leaky.gate is None
    assert any("leak signature" in note for note in leaky.notes)
    assert alias_version(client, "fraud-detector", CHAMPION) is None
    unchecked = settings.model_copy(
        update={"training": settings.training.model_copy(update={"leak_check": False})}
    )
    (let_through,) = run_training(unchecked, ["lightgbm"], "fraud_v2", join="naive")
    assert let_through.alias == CHAMPION  # with the check off, the first version as ever


def test_the_join_uses_the_feature_service_asked_for(world: World, tmp_path: Path) -> None:
    """A service with a view fraud_v2 lacks trains on that view's values: the point-in-time
    join is built from the service asked for, not from a default one."""
    from feast import FeatureService, FeatureView, Field, FileSource
    from feast.types import Float64

    from features.definitions import REQUEST_FEATURES_TAG, customer, terminal
    from features.store import apply_definitions, open_store

    home = tmp_path / "home"
    home.mkdir()
    for linked in ("data", "feature_data"):
        (home / linked).symlink_to(getattr(world.settings, f"{linked}_dir"))
    settings = world.settings.model_copy(update={"home": home, "mlflow_tracking_uri": None})
    risk = pd.read_parquet(world.settings.feature_data_dir / "terminal_risk.parquet")
    busy = risk[["terminal_id", "event_timestamp"]].assign(
        terminal_daily_payments_7d=risk["terminal_tx_count_7d"] / 7
    )
    busy.to_parquet(tmp_path / "terminal_busy.parquet")
    view = FeatureView(
        name="terminal_busy",
        entities=[terminal],
        ttl=pd.Timedelta(days=2).to_pytimedelta(),
        schema=[Field(name="terminal_daily_payments_7d", dtype=Float64)],
        source=FileSource(
            path=str(tmp_path / "terminal_busy.parquet"), timestamp_field="event_timestamp"
        ),
    )
    apply_definitions(settings)
    store = open_store(settings)
    spending = store.get_feature_view("customer_spending")
    service = FeatureService(
        name="fraud_busy",
        features=[spending[["customer_mean_amount_7d"]], view],
        tags={REQUEST_FEATURES_TAG: "amount"},
    )
    store.apply([customer, terminal, view, service])

    (outcome,) = run_training(settings, ["logreg"], "fraud_busy")

    tags = MlflowClient().get_model_version("fraud-detector", outcome.version).tags
    assert tags["feature_service"] == "fraud_busy"
    assert tags["features"] == "customer_mean_amount_7d,terminal_daily_payments_7d,amount"


def test_no_point_in_time_average_precision_is_not_a_leak() -> None:
    """A test period without a known fraud has no AP (NaN): nothing to judge, no refusal."""
    from fraudlab.settings import TrainingSettings
    from pipelines.gate import leak_signature

    t = TrainingSettings()
    assert leak_signature(t, "3", 0.99, float("nan")) is None
    assert leak_signature(t, "3", 0.99, 0.33) is not None
