"""The scoring service: everything the API's routes call, wired once at startup."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from datetime import datetime

from features.store import feature_service, open_store, service_features
from fraudlab.errors import ModelUnavailable, PaymentRefused
from fraudlab.settings import Settings
from pipelines.registry import CHALLENGER, CHAMPION
from serving.clock import ServiceClock, held_clock_path
from serving.exploration import Exploration
from serving.features import OVER_BUDGET, STORE_ERROR, FeatureVector, OnlineFeatures
from serving.metrics import ServingMetrics
from serving.models import LoadedModels, ModelManager
from serving.prediction_log import PredictionLog, PredictionRecord
from serving.routing import RoutingPolicy
from serving.schemas import ModelRef, ReloadResult, ScoreRequest, ScoreResponse
from serving.shadow import ShadowJob, ShadowScorer
from serving.velocity_state import PaymentEvent, micros, transaction_key
from serving.velocity_updates import payment_updates

log = logging.getLogger(__name__)


class ScoringService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ServingMetrics()
        self.store = open_store(settings)
        self.routing = RoutingPolicy(settings.serving.canary_share, settings.serving.shadow)
        self.exploration = Exploration(settings.serving.exploration_share)
        self.clock = ServiceClock(
            held_clock_path(settings.home),
            settings.serving.max_payment_lateness_seconds,
            settings.serving.max_payment_lead_seconds,
        )
        self.log = PredictionLog(
            settings.prediction_log_path,
            settings.serving.log_flush_seconds,
            settings.serving.log_batch_rows,
            settings.serving.log_max_pending_rows,
            settings.serving.log_spill_dir,
            settings.serving.log_spill_after_seconds,
        )
        self.shadow = ShadowScorer(settings.serving.shadow_queue_size, self.log.append)
        self.updates = payment_updates(settings)
        self._lag = (0.0, 0.0)  # seconds behind, events pending
        self._stop_lag = threading.Event()
        self.metrics.bind_gauges(
            self.shadow.depth,
            lambda: self.shadow.dropped,
            lambda: self.shadow.errors,
            self.log.pending,
            self.log.counts,
            self._stream_lag,
            lambda: float(self.routing.breaker != "off"),
        )
        self.models = ModelManager(
            settings,
            online_for=self._online_for,
            served_features=self._served_features,
            on_swapped=self._show_versions,
            on_refused=self._count_refusals,
        )

    def start(self) -> None:
        self.reload()
        self.models.start_watching()
        if self.updates.mode == "stream":
            threading.Thread(target=self._watch_lag, name="stream-lag", daemon=True).start()

    def close(self) -> None:
        self.models.stop()
        self.shadow.close()
        self.log.close()
        self._stop_lag.set()
        self.updates.close()

    def _stream_lag(self) -> tuple[float, float]:
        return self._lag

    def _watch_lag(self) -> None:
        """The stream's lag for /metrics and for every logged answer's velocity age."""
        while not self._stop_lag.wait(self.settings.stream.lag_refresh_seconds):
            try:
                lag = self.updates.lag(micros(self.clock.now()))
                self._lag = (lag.seconds, float(lag.pending_events))
            except Exception as exc:  # unknown, not zero: Redis is not answering
                log.warning("stream lag unreadable: %r", exc)
                self._lag = (math.nan, math.nan)

    def _update_payment_state(self, request: ScoreRequest, now: datetime) -> None:
        """Every scored payment goes into its customer's and terminal's state; a failure
        is counted and logged, never raised: the answer stands either way."""
        if self.updates.mode == "off":
            return
        event = PaymentEvent(
            transaction_id=transaction_key(request.transaction_id),
            customer_id=request.customer_id,
            terminal_id=request.terminal_id,
            amount=request.amount,
            event_us=micros(request.timestamp),
            served_us=micros(now),
        )
        try:
            outcome = self.updates.publish(event)
        except Exception as exc:
            log.warning("payment state update failed (%r): velocity goes stale", exc)
            outcome = "failed"
        self.metrics.payment_updates.labels(outcome).inc()

    def _online_for(self, loaded: LoadedModels) -> OnlineFeatures:
        """A client asking Feast for exactly the entity features the models' services name."""
        refs: list[str] = []
        for model in (loaded.champion, loaded.challenger):
            if model is None:
                continue
            service = feature_service(self.store, model.feature_service)
            for projection in service.feature_view_projections:
                refs += [f"{projection.name}:{f.name}" for f in projection.features]
        if not any(ref.endswith(":customer_mean_amount_30d") for ref in refs):
            refs.append("customer_spending:customer_mean_amount_30d")  # request-time ratio
        serving = self.settings.serving
        return OnlineFeatures(
            self.store,
            sorted(set(refs)),
            serving.fill_missing_with,
            serving.online_budget_ms / 1e3,
            pending=self.updates.pending,
        )

    def _show_versions(self, loaded: LoadedModels) -> None:
        for alias in (CHAMPION, CHALLENGER):
            model = loaded.get(alias)
            self.metrics.model_version.labels(alias).set(int(model.version) if model else 0)

    def _served_features(self, service_name: str) -> set[str]:
        entity, request = service_features(feature_service(self.store, service_name))
        return set(entity) | set(request)

    def _count_refusals(self, errors: dict[str, str]) -> None:
        for alias in errors:
            self.metrics.reload_failures.labels(alias).inc()

    def reload(self) -> ReloadResult:
        errors = self.models.refresh()
        current = self.models.current
        return ReloadResult(
            loaded={
                a: (m.version if (m := current.get(a)) else None) for a in (CHAMPION, CHALLENGER)
            },
            errors=errors,
        )

    def ready(self) -> tuple[bool, str, dict[str, str]]:
        """Ready or not, why, and what the last reload refused (it keeps serving the
        last good version then, and says so here rather than only in a log)."""
        current, refused = self.models.current, dict(self.models.last_errors)
        if current.champion is None:
            return False, "no champion loaded", refused
        if current.online is None or not current.online.ping():
            return False, "feature store not answering", refused
        if not self.log.alive():  # answers would go unlogged: unseen by every monitor job
            return False, "prediction log writer stopped", refused
        return True, "ready", refused

    def score(self, request: ScoreRequest) -> ScoreResponse:
        with self.shadow.held_off():  # the shadow waits while a caller waits
            return self._score(request)

    def _score(self, request: ScoreRequest) -> ScoreResponse:
        started = time.perf_counter()
        now = self.clock.now()
        if refusal := self.clock.refusal(request.timestamp, now):
            self.metrics.refused_payments.labels("timestamp").inc()
            raise PaymentRefused("timestamp", refusal)
        loaded = self.models.current  # one snapshot for the whole request
        online = loaded.online
        if loaded.champion is None or online is None:
            raise ModelUnavailable("no champion model is loaded")
        route = self.routing.route(request.customer_id, loaded.challenger is not None)
        model = loaded.challenger if route == "canary" else loaded.champion
        assert model is not None
        vector = online.lookup(
            request.customer_id, request.terminal_id, request.amount, request.timestamp
        )
        features_done = time.perf_counter()
        row = vector.row(model.features)
        score = model.score(row)
        decision = model.decide(score)
        model_done = time.perf_counter()
        request_id = uuid.uuid4().hex
        if self.routing.shadow and route == "champion" and loaded.challenger is not None:
            # The challenger's row is built in the shadow worker: nothing about the
            # challenger can fail or slow the champion's answer.
            self.shadow.submit(ShadowJob(request_id, loaded.challenger, vector))
        alias = CHALLENGER if route == "canary" else CHAMPION
        self._update_payment_state(request, now)
        # Once: the answer and its log agree. The breaker first (it never approves),
        # then exploration, whose propensity is of the decision actually served.
        served, propensity = self.exploration.apply(
            request.transaction_id, self.routing.served(decision)
        )
        self._record(
            request,
            now,
            request_id,
            route,
            alias,
            model.version,
            score,
            (decision, served, propensity),
            loaded,
            vector,
            (started, features_done, model_done),
        )
        return ScoreResponse(
            request_id=request_id,
            transaction_id=request.transaction_id,
            score=score,
            decision=served,
            route=route,
            model=ModelRef(name=model.name, version=model.version, alias=alias),
            fallback=bool(vector.fallback),
            fallback_features=vector.fallback,
        )

    def _record(
        self,
        request: ScoreRequest,
        now: datetime,
        request_id: str,
        route: str,
        alias: str,
        version: str,
        score: float,
        decisions: tuple[str, str, float],  # the model's, the one served, its propensity
        loaded: LoadedModels,
        vector: FeatureVector,
        marks: tuple[float, float, float],
    ) -> None:
        decision, served, propensity = decisions
        started, features_done, model_done = marks
        total = time.perf_counter() - started
        m = self.metrics
        m.stage_seconds.labels("features").observe(features_done - started)
        m.stage_seconds.labels("model").observe(model_done - features_done)
        m.stage_seconds.labels("total").observe(total)
        m.requests.labels(route, decision).inc()
        if served == "approve" != decision:
            m.explored.labels(route, decision).inc()
        elif served != decision:
            m.breaker_overrides.labels(route).inc()
        ages = vector.ages | dict.fromkeys(
            loaded.online.velocity_views if loaded.online else (), self._lag[0]
        )
        for view, age in ages.items():
            if age is not None and not math.isnan(age):
                m.feature_age.labels(view).observe(max(age, 0.0))
        if vector.fallback:
            reason = next(
                (r for r in (STORE_ERROR, OVER_BUDGET) if r in vector.fallback),
                "missing_or_stale",
            )
            m.fallbacks.labels(reason).inc()
        self.log.append(
            PredictionRecord(
                request_id=request_id,
                transaction_id=request.transaction_id,
                event_timestamp=request.timestamp,
                served_at=now,
                customer_id=request.customer_id,
                terminal_id=request.terminal_id,
                amount=request.amount,
                route=route,
                model_alias=alias,
                model_version=version,
                score=score,
                decision=served,
                model_decision=decision,
                champion_version=loaded.champion.version if loaded.champion else None,
                challenger_version=loaded.challenger.version if loaded.challenger else None,
                fallback_features=vector.fallback,
                features=vector.values,
                features_ms=(features_done - started) * 1e3,
                model_ms=(model_done - features_done) * 1e3,
                total_ms=total * 1e3,
                feature_age=ages,
                propensity=propensity,
            )
        )
