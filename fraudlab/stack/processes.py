"""The stack's services as local processes: start in order and wait for health, report,
stop. Each service runs detached, leading a process group of its own (so uvicorn's and
MLflow's worker processes stop with it), with a pid record `<name>.json` and a log
`<name>.log` under <home>/stack/.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import yaml

from fraudlab.errors import ConfigError, FraudlabError, ServiceUnavailable
from fraudlab.settings import Settings
from fraudlab.stack.services import (
    COMPOSE_ONLY,
    Network,
    Service,
    check_postgres,
    check_redis,
    listening,
    services,
    stack_dir,
)
from fraudlab.stack.uis import ui_services

PROMETHEUS_CONFIG = Path(__file__).resolve().parents[2] / "deploy/prometheus/prometheus.yml"
# No CPU used over this long: a scheduled job is waiting for its next run. Longer than
# a failed run's exit takes (about a second of atexit work, also without CPU).
IDLE_SECONDS = 3.0
STOP_SECONDS = 20.0  # SIGTERM's grace (the API flushes its prediction log), then SIGKILL
Say = Callable[[str], None]


@dataclass
class Record:
    """What `up` wrote about a service it started: all that `status` and `down` need."""

    name: str
    pid: int  # also its process group id: each service leads a session of its own
    started: float  # the process's create time: a reused pid is not ours
    argv: list[str]
    log: str
    url: str | None = None
    health_path: str | None = None
    ready_path: str | None = None


@dataclass(frozen=True)
class Row:
    """One line of `fraudlab stack status`."""

    service: str
    pid: str
    state: str
    health: str
    url: str
    log: str  # file name in stack_dir


def read_records(settings: Settings) -> list[Record]:
    """Every service `up` started and `down` has not stopped, in start order."""
    folder = stack_dir(settings)
    paths = sorted(folder.glob("*.json")) if folder.exists() else []
    return sorted((Record(**json.loads(p.read_text())) for p in paths), key=lambda r: r.started)


def group(record: Record) -> list[psutil.Process]:
    """The live processes of the service's process group; none if the pid is not ours."""
    try:
        if abs(psutil.Process(record.pid).create_time() - record.started) > 0.5:
            return []  # the pid now belongs to a process we did not start
    except psutil.NoSuchProcess:
        pass  # the leader is gone; its workers may live on, and the group id with them
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(process.pid) == record.pid:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def ensure_admin_token(settings: Settings, say: Say) -> None:
    if path := settings.ensure_admin_token():
        say(f"admin token generated: {path} (mode 0600)")


def up(settings: Settings, net: Network, say: Say) -> None:
    """Start every service not yet running, in order, each once its dependencies are
    healthy. On a failure, stop what this call started and raise."""
    if settings.profile != "production":
        raise ConfigError("the stack runs the production profile: set FRAUDLAB_PROFILE=production")
    check_postgres(settings, create=True)  # MLflow's server needs its database to exist
    check_redis(settings)
    ensure_admin_token(settings, say)
    start_all(settings, net, services(settings, net), say)


def start_all(settings: Settings, net: Network, wanted: list[Service], say: Say) -> None:
    """Start each service not yet running, in order, each once the ones before it are
    healthy. On a failure, stop what this call started and raise."""
    stack_dir(settings).mkdir(parents=True, exist_ok=True)
    running = {r.name: r for r in read_records(settings) if group(r)}
    started: list[Record] = []
    try:
        for service in wanted:
            program = _program(service.argv[0])
            if program is None:
                if not service.optional:
                    raise ConfigError(f"{service.name}: {service.argv[0]!r} is not installed")
                say(f"{service.name}: not installed, skipped")
            elif service.name in running:
                record = running[service.name]
                say(f"{service.name}: already running (pid {record.pid})")
                _wait_healthy(record, service.start_seconds, _stopped_unless_alive(record))
            else:
                say(f"{service.name}: starting (log: {stack_dir(settings) / service.name}.log)")
                started.append(_start(settings, net, service, program))
                say(f"{service.name}: healthy (pid {started[-1].pid})")
    except (FraudlabError, KeyboardInterrupt):  # failed or interrupted: undo this call
        for record in reversed(started):
            say(f"{record.name}: {stop(settings, record)}")
        raise


def down(settings: Settings, say: Say) -> None:
    records = read_records(settings)
    if not records:
        say("nothing to stop: no service of the stack is running")
    for record in reversed(records):
        say(f"{record.name}: {stop(settings, record)}")


def stop(settings: Settings, record: Record) -> str:
    """SIGTERM the service's process group, SIGKILL what is left after STOP_SECONDS."""
    outcome = "had already exited (its log says why)"
    if group(record):
        os.killpg(record.pid, signal.SIGTERM)
        outcome = "stopped"
        if not _gone(record, STOP_SECONDS):
            os.killpg(record.pid, signal.SIGKILL)
            _gone(record, 5.0)
            outcome = f"killed: still running {STOP_SECONDS:.0f} s after SIGTERM"
    (stack_dir(settings) / f"{record.name}.json").unlink(missing_ok=True)
    return outcome


def status(settings: Settings, net: Network) -> list[Row]:
    rows = []
    for name, check in (("postgres", check_postgres), ("redis", check_redis)):
        try:
            url, health = check(settings), "reachable"
        except ServiceUnavailable as exc:
            url, health = "-", f"unreachable: {exc}"
        rows.append(Row(name, "-", "external", health, url, "-"))
    records = {r.name: r for r in read_records(settings)}
    for service in [*services(settings, net), *ui_services(settings, ui_ports(records))]:
        record = records.get(service.name)
        if record is None:
            missing = service.optional and _program(service.argv[0]) is None
            state = "not installed, skipped" if missing else "stopped"
            rows.append(Row(service.name, "-", state, "-", service.url or "-", "-"))
        else:
            alive = bool(group(record))
            state, health = ("running", _health(record)) if alive else ("exited", "-")
            log_name = Path(record.log).name  # in stack_dir, which `status` names once
            rows.append(
                Row(service.name, str(record.pid), state, health, record.url or "-", log_name)
            )
    rows += [Row(name, "-", "compose only", "-", "-", "-") for name in COMPOSE_ONLY]
    return rows


def ui_ports(records: dict[str, Record]) -> dict[str, int]:
    """The ports the running UIs were started on (`fraudlab ui --*-port`)."""
    return {
        name: port
        for name, record in records.items()
        if record.url and (port := urlsplit(record.url).port) is not None
    }


def _health(record: Record) -> str:
    if record.url is None or record.health_path is None:
        return "alive"
    code, _ = http_get(f"{record.url}{record.health_path}")
    if code != 200:
        return f"unhealthy (HTTP {code})" if code else "unhealthy (no answer)"
    if record.ready_path is None:
        return "healthy"
    code, body = http_get(f"{record.url}{record.ready_path}")
    return "healthy, ready" if code == 200 else f"healthy, not ready: {body.get('reason', code)}"


def http_get(url: str) -> tuple[int | None, dict]:
    """(status code, JSON object body or {}) of a GET; (None, {}) when nothing answers."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None, {}
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def _program(name: str) -> str | None:
    """Our own environment's copy first (fraudlab, mlflow), then PATH (prometheus)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _last_line(log: str) -> str:
    lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(empty log)"


def _start(settings: Settings, net: Network, service: Service, program: str) -> Record:
    address = urlsplit(service.url or "")
    if address.hostname and address.port and listening(address.hostname, address.port):
        raise ServiceUnavailable(
            f"{service.name}: {service.url} is taken by a process the stack did not start; "
            "stop it, or give the stack another port"
        )
    if service.name == "prometheus":
        write_prometheus_config(settings, net)
    log = stack_dir(settings) / f"{service.name}.log"
    argv = [program, *service.argv[1:]]
    with log.open("ab") as out:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        out.write(f"\n=== {stamp} fraudlab stack up: {shlex.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            argv,
            env={**os.environ, **service.env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, out of reach of the shell's Ctrl-C
        )
    created = psutil.Process(process.pid).create_time()
    record = Record(
        service.name,
        process.pid,
        created,
        argv,
        str(log),
        service.url,
        service.health_path,
        service.ready_path,
    )
    (stack_dir(settings) / f"{service.name}.json").write_text(json.dumps(asdict(record)))

    def exited() -> str | None:
        code = process.poll()
        return None if code is None else f"exited with code {code}"

    try:
        _wait_healthy(record, service.start_seconds, exited)
    except FraudlabError:
        stop(settings, record)
        raise
    return record


def _stopped_unless_alive(record: Record) -> Callable[[], str | None]:
    """A process check for a service started before: "stopped" once its group is gone."""
    return lambda: None if group(record) else "stopped"


def _wait_healthy(record: Record, seconds: float, exited: Callable[[], str | None]) -> None:
    """Until the health URL answers 200; for a service without one (the monitor, a
    scheduled job), until it is alive and idle: its first run done, waiting for the next."""
    deadline = time.monotonic() + seconds
    while True:
        gone = exited()
        if gone is not None:
            raise ServiceUnavailable(
                f"{record.name} {gone} before it was healthy: {_last_line(record.log)} "
                f"(log: {record.log})"
            )
        if record.health_path is None:
            if _idle(record):
                return
        elif http_get(f"{record.url}{record.health_path}")[0] == 200:
            return
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(
                f"{record.name} was not healthy within {seconds:.0f} s (log: {record.log})"
            )
        time.sleep(0.25)


def _idle(record: Record) -> bool:
    def cpu_seconds() -> float:
        total = 0.0
        for process in group(record):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    before = cpu_seconds()
    time.sleep(IDLE_SECONDS)
    # Still there, and past its imports (a second of CPU or more): at start-up, a
    # process waiting on the disk uses no CPU either.
    alive = bool(group(record))
    return alive and before >= 1.0 and cpu_seconds() - before < 0.02 * IDLE_SECONDS


def _gone(record: Record, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def write_prometheus_config(settings: Settings, net: Network) -> None:
    """deploy/prometheus/prometheus.yml with each job's target (the service of the same
    name) moved from the compose network to loopback, and its rule files (alerts.yml)
    named by their full path: the copy lives elsewhere, the rules stay in one place."""
    if not PROMETHEUS_CONFIG.exists():
        raise ConfigError(f"{PROMETHEUS_CONFIG} is missing (it ships with the repository)")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [urlsplit(net.url(job["job_name"])).netloc]}]
    config["rule_files"] = [
        str(PROMETHEUS_CONFIG.parent / name) for name in config.get("rule_files", [])
    ]
    (stack_dir(settings) / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
