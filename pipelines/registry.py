"""MLflow: where runs are logged and models registered under aliases.

`champion` is the version that decides; `challenger` a version that passed the
offline gate and may be tried on live traffic. Aliases, not the deprecated stages.
Every version carries what serving and monitoring need to use it without the run, as
its tags: `VersionTags` is that contract, written by training and read by serving.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sklearn.pipeline import Pipeline

from fraudlab.errors import ModelUnavailable, ServiceUnavailable
from fraudlab.settings import Settings, describe_validation_error
from pipelines.model_files import (
    SKOPS_TRUSTED,
    model_file,
    read_input_example,
    read_model,
    sha256,
)

CHAMPION, CHALLENGER = "champion", "challenger"
EXPERIMENT = "fraudlab-training"


class VersionTags(BaseModel):
    """What a registered version says about itself: MLflow tags are strings, this is
    their one typed reading. Tags a person adds in the MLflow UI are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    flavor: Literal["lightgbm", "sklearn"]  # which model file its artifact must hold
    features: list[str] = Field(min_length=1)  # the model's column order
    feature_service: str  # the Feast service that serves exactly those features
    threshold_review: float
    threshold_decline: float
    train_period: str  # event dates of the training rows, "YYYY-MM-DD..YYYY-MM-DD"
    labels_as_of: str  # the cutoff: labels are those known then (YYYY-MM-DD)
    data_fingerprint: str
    join: Literal["pit", "naive"]
    leaky: bool
    code_version: str
    # The model file's SHA-256, set by log_model_version; serving refuses a mismatch.
    artifact_sha256: str = ""
    # Scores to probabilities (pipelines/evaluate.py Calibration); a version registered
    # before these existed reads as the identity.
    calibration_slope: float = 1.0
    calibration_intercept: float = 0.0
    calibration_points: str = ""  # isotonic: "score:probability;..." (Platt: none)
    # Frauds per payment among those it approves, on the held-out periods (evaluate.py
    # missed_fraud_rate): the monitor's reference for the missed frauds it counts on
    # approved traffic. 0: unknown (registered before it existed), no reference.
    missed_fraud_rate: float = Field(default=0.0, ge=0)

    @field_validator("features", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [n for n in value.split(",") if n] if isinstance(value, str) else value

    def to_tags(self) -> dict[str, str]:
        values = self.model_dump()
        values["features"] = ",".join(self.features)
        values["leaky"] = str(self.leaky).lower()
        for key in (
            "threshold_review",
            "threshold_decline",
            "calibration_slope",
            "calibration_intercept",
            "missed_fraud_rate",
        ):
            values[key] = f"{values[key]:.6g}"
        return {key: str(value) for key, value in values.items()}

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> VersionTags:
        try:
            return cls.model_validate(tags)
        except ValidationError as exc:
            raise ModelUnavailable(
                f"version {version}'s tags are not a fraudlab model's:\n"
                + describe_validation_error(exc)
            ) from exc


@dataclass(frozen=True)
class RegisteredModel:
    """One loaded registry version with the metadata its tags carry."""

    version: str
    model: Pipeline | lgb.Booster
    tags: VersionTags
    example: pd.DataFrame | None = None  # the rows logged with it (its input example)

    @property
    def features(self) -> list[str]:
        return self.tags.features


def ensure_postgres_database(uri: str) -> None:
    """MLflow needs its database to exist; create it on first use (production profile)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    url = make_url(uri)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    except OperationalError as exc:
        raise ServiceUnavailable(
            f"PostgreSQL at {url.host}:{url.port} is unreachable: {exc.orig}"
        ) from exc
    finally:
        admin.dispose()


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and make sure our experiment exists."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:"):
        settings.home.mkdir(parents=True, exist_ok=True)
    elif uri.startswith("postgresql"):
        ensure_postgres_database(uri)
    mlflow.set_tracking_uri(uri)
    try:
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            settings.artifact_root.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(EXPERIMENT, artifact_location=settings.artifact_root.as_uri())
        mlflow.set_experiment(EXPERIMENT)
    except MlflowException as exc:
        raise ServiceUnavailable(
            f"MLflow store {settings.tracking_uri} cannot be used: {exc.message}"
        ) from exc
    return MlflowClient()


def code_version() -> str:
    """The git commit this code came from, or the package version outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            text=True,
            capture_output=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, text=True, capture_output=True, timeout=5
        ).stdout.strip()
        return f"{sha}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"fraudlab-{version('fraudlab')}"


def log_model_version(
    model: Pipeline | lgb.Booster, example: pd.DataFrame, model_name: str, tags: VersionTags
) -> str:
    """Log the model in the active run, register it, and tag the new version."""
    signature = infer_signature(example, pd.Series([0.5] * len(example), name="fraud_score"))
    common: dict[str, Any] = {
        "name": "model",
        "signature": signature,
        "input_example": example.head(3),
        "registered_model_name": model_name,
    }
    # The flavor's own pinned requirements, given: inferring them imports the model in
    # a subprocess, 8 to 11 s a version on this machine against 0.2 s (measured).
    if isinstance(model, lgb.Booster):
        requirements = mlflow.lightgbm.get_default_pip_requirements()
        info = mlflow.lightgbm.log_model(model, pip_requirements=requirements, **common)
    else:  # skops, not pickle: reading it back runs no code (pipelines/model_files.py)
        info = mlflow.sklearn.log_model(
            model,
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED,
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            **common,
        )
    version = str(info.registered_model_version)
    with tempfile.TemporaryDirectory() as scratch:
        logged = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=scratch))
        _, path = model_file(logged)
        tags = tags.model_copy(update={"artifact_sha256": sha256(path)})
    client = MlflowClient()
    for key, value in tags.to_tags().items():
        client.set_model_version_tag(model_name, version, key, value)
    return version


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points at; None when the alias (or model) does not exist.

    Any other failure (store unreachable) is raised: "no answer" must never be read as
    "no alias", or a registry outage would unload the serving models.
    """
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise


def set_alias(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(model_name, alias, version)


def version_tags(client: MlflowClient, model_name: str, version: str) -> VersionTags:
    """A version's tags, without its model file."""
    return VersionTags.from_tags(version, dict(client.get_model_version(model_name, version).tags))


def load_version(client: MlflowClient, model_name: str, version: str) -> RegisteredModel:
    """The native model behind a version (a Booster or an sklearn pipeline), its tags and
    input example, read without unpickling anything and only if its digest matches."""
    mv = client.get_model_version(model_name, version)
    tags = VersionTags.from_tags(version, dict(mv.tags))
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}", dst_path=scratch)
        )
        try:
            model = read_model(local, tags.flavor, tags.artifact_sha256)
        except ModelUnavailable as exc:
            raise ModelUnavailable(f"version {version}: {exc}") from exc
        example = read_input_example(local)
    return RegisteredModel(version=version, model=model, tags=tags, example=example)
