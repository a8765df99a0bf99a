"""The one place where paths, URIs and knobs are read.

Precedence, lowest to highest: the defaults below, then a YAML config file
(``FRAUDLAB_CONFIG``, or ``./fraudlab.yaml`` when it exists), then ``FRAUDLAB_*``
environment variables. Unknown keys fail loudly. Reading settings has no side
effects: nothing is created and nothing connects until an entry point asks.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fraudlab.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("fraudlab.yaml")


OfflineEngine = Literal["duckdb", "spark"]  # settings.offline_store


class SimulationSettings(BaseModel):
    """Size and seed of the simulated payment history the demo generates."""

    model_config = {"extra": "forbid"}

    customers: int = Field(2_000, ge=10, le=10_000_000)  # ~475k payments over 120 days
    terminals: int = Field(4_000, ge=10, le=10_000_000)
    days: int = Field(120, ge=14, le=3_650)  # 100 days to train on, then 20 days of "future"
    seed: int = Field(7, ge=0)
    start_date: str = "2026-01-01"  # day 0 of the simulation (UTC midnight)


class TrainingSettings(BaseModel):
    """Time split and costs of the training pipeline."""

    model_config = {"extra": "forbid"}

    # The Feast feature service models train on (features/definitions.py lists ours).
    feature_service: str = Field("fraud_v3", min_length=1)
    cutoff_day: int = Field(100, ge=1)  # train on days before this; later days are "the future"
    warmup_days: int = Field(30, ge=0)  # 30-day windows are incomplete before this
    validation_days: int = Field(14, ge=1)  # threshold and early stopping are tuned here
    test_days: int = Field(14, ge=1)  # the held-out period the gate compares on
    gap_days: int = Field(3, ge=0)  # keeps labels maturing across split edges apart
    label_maturity_days: int = Field(14, ge=0)  # most chargebacks arrive within two weeks
    # How far the matured-risk windows end before each snapshot (features/build.py).
    # None: the data's own median chargeback delay, so a dataset brought in through
    # `data validate` gets its delay, not the simulator's.
    label_delay_days: int | None = Field(None, ge=0, le=180)
    review_cost: float = Field(5.0, gt=0)  # an analyst's time on one reviewed payment
    # Reviews the analysts finish in a day: precision at capacity is measured at it, and
    # the feedback loop's world verdicts at most this many a day (data/feedback.py).
    analyst_capacity_per_day: int = Field(50, ge=1)
    # A good customer declined: this share of the amount (margin, churn) plus a fixed
    # friction cost (a call, a retry). Zero for both would make declining free.
    false_decline_share: float = Field(0.1, ge=0, le=1)
    false_decline_fixed: float = Field(2.0, ge=0)
    # The gate refuses a version whose test AP on point-in-time features (what serving
    # will see) is below (1 - this) x its AP on its own test set: the signature of a
    # leaky join. `leak_check: false` lets one through (the leaky story's canary path).
    leak_check: bool = True
    leak_max_ap_drop: float = Field(0.5, gt=0, lt=1)
    bootstrap_rounds: int = Field(200, ge=20, le=10_000)
    # Rolling folds `fraudlab train` prints (pipelines/prequential.py); 0: none.
    prequential_folds: int = Field(4, ge=0, le=12)
    reference_sample_rows: int = Field(5_000, ge=100)  # training features kept for drift jobs
    model_name: str = "fraud-detector"


class FeedbackSettings(BaseModel):
    """How the simulated world labels a payment from the decision it got
    (data/feedback.py): approved -> chargeback or the window closing; reviewed -> an
    analyst's verdict within hours, at most training.analyst_capacity_per_day a day;
    declined -> nothing, but for the share of good customers who call to confirm."""

    model_config = {"extra": "forbid"}

    analyst_hours: float = Field(4.0, gt=0, le=72)  # mean time to an analyst's verdict
    analyst_error_rate: float = Field(0.05, ge=0, lt=0.5)  # verdicts that are wrong
    customer_confirm_share: float = Field(0.05, ge=0, le=1)  # good customers declined who call
    customer_confirm_hours: float = Field(24.0, gt=0, le=720)  # within this long


class ServingSettings(BaseModel):
    """The scoring service: routing, shadow, hot swap, prediction log, admin."""

    model_config = {"extra": "forbid"}

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = Field(8000, ge=1, le=65_535)
    workers: int = Field(1, ge=1, le=32)
    canary_share: float = Field(0.0, ge=0.0, le=1.0)  # customers routed to the challenger
    shadow: bool = True  # score the challenger for all traffic, off the request path
    # Of the payments the model would review or decline, the share approved instead at
    # random, each with its propensity logged (serving/exploration.py). It buys labels
    # for what the champion stops, at the cost of the fraud among them: `fraudlab
    # feedback-loop` prints both. Off by default; above half it is no longer a model.
    exploration_share: float = Field(0.0, ge=0.0, le=0.5)
    shadow_queue_size: int = Field(1_000, ge=1)  # full queue drops (and counts) shadow work
    alias_poll_seconds: float = Field(5.0, gt=0)  # how often the watcher checks aliases
    log_flush_seconds: float = Field(0.2, gt=0)  # bound on what a hard kill can lose
    log_batch_rows: int = Field(500, ge=1)
    # Records held while the log cannot be written (a locked or full disk): past this,
    # new ones are dropped and counted, not buffered without bound (~2 KB a record).
    log_max_pending_rows: int = Field(50_000, ge=1)
    # Once the log has refused rows this long, batches go to a spill folder (another
    # disk, ideally; default <home>/prediction_log_spill) and are drained into the log
    # when it takes rows again (serving/prediction_log/writer.py states the policy).
    log_spill_dir: Path | None = None
    log_spill_after_seconds: float = Field(5.0, gt=0, le=3_600)
    admin_token: str | None = None  # admin endpoints are off when unset
    max_body_bytes: int = Field(4_096, ge=256)  # a payment is ~200 bytes
    # None (right): a missing feature reaches the model as NaN, as in training. A number
    # reproduces the classic `fillna(0)` serving bug (scenario skew-missing-default).
    fill_missing_with: float | None = None
    # Online features' time per request: Redis socket and connect timeouts, and no
    # further view is read once it is spent. A loopback lookup takes ~1 ms; past the
    # budget the payment is scored on an explicit, counted fallback instead of waiting.
    online_budget_ms: float = Field(20.0, gt=0, le=5_000)
    # The payment times the API accepts, around the service's clock (serving/clock.py):
    # a gateway's clock a few minutes ahead of ours, a payment scored up to a day late.
    max_payment_lead_seconds: float = Field(300.0, ge=0, le=86_400)
    max_payment_lateness_seconds: float = Field(86_400.0, ge=0, le=31 * 86_400)


class StreamSettings(BaseModel):
    """How scored payments reach the payment-state views (features/velocity.py)."""

    model_config = {"extra": "forbid"}

    # "inline": a writer process the API starts merges each scored payment into the online
    # store, and an overlay shows it to the next request before it is written (the
    # embedded default: nothing else to run). "stream": the API appends it
    # to a Redis stream and `fraudlab stream worker` applies it (the production default).
    # "off": nothing updates it, and velocity features freeze at the last materialized
    # state (benchmarks/serving.py measures the update path against it). None: by profile.
    updates: Literal["inline", "stream", "off"] | None = None
    # Where the streams live, in the online store's host:port[,db=N,...] form (default:
    # the online store's Redis, `redis_connection`).
    redis_connection: str | None = None
    prefix: str = Field("fraudlab:payments", pattern=r"^[A-Za-z0-9:_-]{1,64}$")
    # Streams per entity kind; an entity always goes to the same one, and each stream
    # has exactly one worker, so a state has one writer whatever the worker count.
    shards: int = Field(4, ge=1, le=256)
    workers: int = Field(1, ge=1, le=64)  # `fraudlab stack up` starts this many
    batch_events: int = Field(500, ge=1, le=100_000)  # per read from the stream
    max_length: int = Field(1_000_000, ge=1_000)  # per stream, approximately trimmed
    # How often the API reads the stream's lag (for /metrics and each answer's velocity
    # age). A replay faster than live (a scenario) reads it more often, or a stopped
    # worker would show up simulated hours late.
    lag_refresh_seconds: float = Field(0.5, gt=0, le=60)
    # Once an event is there, the publisher and the worker wait this long for more, so
    # that they send and apply in batches: one by one, the worker spends most of its
    # time on round trips (0.6 ms of CPU a payment at 200 payments/s with 10 ms, 0.3 ms
    # with 50 ms: benchmarks/serving.py --update-path). It adds at most twice this to
    # the lag, far inside the velocity views' freshness objective (monitoring/policy.yaml).
    linger_ms: float = Field(50.0, ge=0, le=1_000)


class MonitoringSettings(BaseModel):
    """The monitor: its window, policy and how it reaches the serving admin API."""

    model_config = {"extra": "forbid"}

    policy_path: Path | None = None  # default: monitoring/policy.yaml
    window_hours: float = Field(24.0, gt=0)  # one day of traffic per run
    skew_sample_rows: int = Field(2_000, ge=10)
    api_url: str | None = None  # default: http://{serving.host}:{serving.port}


class Settings(BaseSettings):
    """Every knob fraudlab reads. See README for the production profile."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUDLAB_", env_nested_delimiter="__", extra="forbid"
    )

    profile: Literal["embedded", "production"] = "embedded"
    home: Path = Path(".fraudlab")  # everything the demo writes lives here
    mlflow_tracking_uri: str | None = None  # default: SQLite under home (embedded)
    postgres_uri: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/fraudlab_mlflow"
    redis_connection: str = "127.0.0.1:6379"
    # Feast's offline store: the training sets' point-in-time join, materialization and
    # the skew job's offline recomputation. DuckDB in this process (ours, the default),
    # or Feast's Spark offline store, the path past one machine (docs/production.md says
    # from what size it pays off). Changing it takes a `fraudlab features apply`: the
    # registry records each view's source type.
    offline_store: OfflineEngine = "duckdb"
    spark_master: str = "local[*]"  # PySpark in local mode on this machine's Java
    # The driver collects the whole training frame (1.2 GB serialized at 10M payments of
    # fraud_v2, docs/production.md): raise it with the history's size.
    spark_driver_memory: str = "4g"
    require_services: bool = False  # tests: fail, not skip, when PostgreSQL/Redis are absent
    simulation: SimulationSettings = SimulationSettings()
    training: TrainingSettings = TrainingSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    serving: ServingSettings = ServingSettings()
    stream: StreamSettings = StreamSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    @model_validator(mode="after")
    def _home_is_absolute(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    # Derived locations: one definition of each path.
    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def transactions_path(self) -> Path:
        return self.data_dir / "transactions.parquet"

    @property
    def label_feed_path(self) -> Path:
        """Label events of served traffic (`fraudlab labels settle`); none: the file's own."""
        return self.home / "labels" / "events.parquet"

    @property
    def feature_data_dir(self) -> Path:
        return self.home / "feature_data"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.profile == "production":
            return self.postgres_uri
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def prediction_log_path(self) -> Path:
        return self.home / "prediction_log.sqlite"

    @property
    def monitoring_dir(self) -> Path:
        return self.home / "monitoring"

    @property
    def evidently_workspace_dir(self) -> Path:
        """`evidently ui --workspace` on it: every monitor run's drift report, over time."""
        return self.monitoring_dir / "evidently"

    @property
    def decision_log_path(self) -> Path:
        return self.monitoring_dir / "decisions.jsonl"

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin_token"

    def admin_token(self) -> str | None:
        """The admin API's bearer token: the setting, else the file `fraudlab stack up`
        generates under the home (mode 0600), shared by the API and the monitor."""
        if self.serving.admin_token:
            return self.serving.admin_token
        path = self.admin_token_path
        return (path.read_text().strip() or None) if path.is_file() else None

    def ensure_admin_token(self) -> Path | None:
        """Without FRAUDLAB_SERVING__ADMIN_TOKEN the API's admin endpoints are off: the
        monitor's routing changes go nowhere and no simulated-time run can hold the
        service clock. So the stack and the demo generate a token file under the home,
        readable by this user only, that the API, the monitor and the replay all read.
        Returns the file's path when this call generated it."""
        if self.serving.admin_token:
            return None
        path = self.admin_token_path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(path, 0o600)  # a token file anyone can read is no secret
            return None
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        return path

    @property
    def action_journal_path(self) -> Path:
        return self.monitoring_dir / "actions.jsonl"

    @property
    def api_url(self) -> str:
        return self.monitoring.api_url or f"http://{self.serving.host}:{self.serving.port}"

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def online_store_type(self) -> str:
        return "redis" if self.profile == "production" else "sqlite"

    @property
    def payment_updates(self) -> Literal["inline", "stream", "off"]:
        if self.stream.updates:
            return self.stream.updates
        return "stream" if self.profile == "production" else "inline"

    @property
    def stream_redis_connection(self) -> str:
        return self.stream.redis_connection or self.redis_connection


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML config file named by FRAUDLAB_CONFIG (or ./fraudlab.yaml)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        named = os.environ.get("FRAUDLAB_CONFIG")
        path = Path(named) if named else DEFAULT_CONFIG_FILE
        if not path.exists():
            if named:
                raise ConfigError(f"config file {path} (from FRAUDLAB_CONFIG) does not exist")
            return {}
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        return loaded


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad field: where it is and what is wrong with it."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(root)"
        lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError("invalid settings:\n" + describe_validation_error(exc)) from exc
