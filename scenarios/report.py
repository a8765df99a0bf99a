"""report.md and summary.json of a run: what broke, how it showed, what caught it,
what the policy did, what it cost, and what a design-round answer should say."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitoring.policy import load_policy
from scenarios.catalog import SCENARIOS
from scenarios.engine import RunResult
from scenarios.outcome import latest_baseline, summarize
from scenarios.plots import plot_skew_features, plot_timeline
from scenarios.timeline import true_recall


def write_run(result: RunResult, runs_root: Path, publish_to: Path | None = None) -> dict[str, Any]:
    """Summary, plots and report into the run folder (and, with `publish_to`, the
    scenario's page and plots into the docs folder); returns the summary."""
    baseline = None
    if result.scenario.name != result.scenario.baseline:
        baseline = latest_baseline(runs_root, result.scenario.baseline, result.spec.key)
    summary = summarize(result, baseline)
    out = result.run_dir
    (out / "timeline.json").write_text(
        json.dumps([r.to_dict() for r in result.records], indent=1, default=str)
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plot_timeline(result, summary, out / "timeline.png")
    skew_plot = plot_skew_features(result, out / "skew_features.png")
    (out / "report.md").write_text(render(result, summary, skew_plot is not None))
    if publish_to is not None:
        publish(result, summary, skew_plot is not None, publish_to)
    return summary


def publish(result: RunResult, summary: dict[str, Any], skew_plot: bool, docs: Path) -> Path:
    """docs/scenarios/<name>.md with its plots under img/: the committed run."""
    name = result.scenario.name
    images = docs / "img"
    images.mkdir(parents=True, exist_ok=True)
    shutil.copy(result.run_dir / "timeline.png", images / f"{name}-timeline.png")
    if skew_plot:
        shutil.copy(result.run_dir / "skew_features.png", images / f"{name}-skew.png")
    page = docs / f"{name}.md"
    page.write_text(render(result, summary, skew_plot, image_prefix=f"img/{name}-"))
    (docs / "summaries").mkdir(exist_ok=True)
    (docs / "summaries" / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str))
    write_index(docs)
    return page


def write_index(docs: Path) -> Path:
    """docs/scenarios/README.md: every published story in one table, from its summary."""
    rows = [
        "| scenario | caught by | time to detect | mitigation | policy actions | recovered | "
        "false alarms before the fault | cost during the incident vs baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, scenario in SCENARIOS.items():
        path = docs / "summaries" / f"{name}.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        cost = s["losses"]["cost"]
        excess = cost.get("excess_over_baseline")
        actions = [a for a in s["actions"] if a["action"] != "alert"] or s["actions"]
        rows.append(
            f"| [{name}]({name}.md) | {scenario.detector or '-'} | "
            f"{simulated_duration(s['time_to_detect_hours'])} | "
            f"{_mitigation(s)} | "
            f"{_actions(actions) or 'none'} | "
            f"{_recovered(s)} | "
            f"{s['false_alarms']['count']} of {s['false_alarms']['monitor_runs']} days"
            f"{_minute_runs(s)} | "
            f"{_fmt(excess, '+,.0f')} |"
        )
    every = load_policy(None).minute_jobs.every_minutes
    index = docs / "README.md"
    index.write_text(
        "\n".join(
            [
                "# Scenarios: the failure stories, run",
                "",
                "Each page is a committed run of `fraudlab scenario run NAME --publish` "
                "(small scale, seed 11): what broke, how it showed, what caught it, what the "
                "policy did, what it cost, and the design-round answer. Times are simulated "
                "time from the injection to the monitor run that caught it (the monitor runs "
                "at every simulated midnight, and its minute jobs every "
                f"{every:g} simulated minutes (minute_jobs.every_minutes), unless the story "
                "sets its own cadence (`Scenario.minute_jobs_every`, or none at all)), or, "
                "where the "
                "model itself is the detector, "
                "from a card-testing burst's first payment to the first one it flagged "
                "(median). Mitigation: the circuit breaker (every decline served as a "
                "review) tripped by a guardrail. Cost = approved fraud + the review fee "
                "(training.review_cost) per reviewed payment, against the baseline run's "
                "same days (same payments).",
                "",
                *rows,
                "",
            ]
        )
    )
    return index


def _actions(actions: list[dict[str, Any]]) -> str:
    """Every action in order, a run of the same one folded: "retrain x6 (days 5-20)"."""
    runs: list[list[dict[str, Any]]] = []
    for action in actions:
        if runs and runs[-1][-1]["action"] == action["action"]:
            runs[-1].append(action)
        else:
            runs.append([action])
    return ", ".join(
        f"{run[0]['action']} (day {run[0]['day']})"
        if len(run) == 1
        else f"{run[0]['action']} x{len(run)} (days {run[0]['day']}-{run[-1]['day']})"
        for run in runs
    )


def _minute_runs(summary: dict[str, Any]) -> str:
    """A summary published before the minute jobs has no count of them: say nothing."""
    runs = summary.get("minute_job_runs")
    return "" if runs is None else f" ({runs:,} minute-job runs)"


def _mitigation(summary: dict[str, Any]) -> str:
    hours = summary.get("time_to_mitigate_hours")
    return "-" if hours is None else f"breaker after {simulated_duration(hours)}"


def _recovered(summary: dict[str, Any]) -> str:
    day = summary.get("recovered_day")
    return "-" if day is None else f"day {day}"


def simulated_duration(hours: float | None) -> str:
    """Simulated time to detect: minutes under an hour, hours above."""
    if hours is None or math.isnan(hours):
        return "-"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.0f} h"


def _fmt(value: float | None, spec: str = ".1f", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def render(
    result: RunResult, summary: dict[str, Any], skew_plot: bool, image_prefix: str = ""
) -> str:
    """The report; with an image prefix, the docs page (no machine-specific paths)."""
    s = result.scenario
    checks = summary["checks"]
    verdict = "the story held" if all(checks.values()) else "THE STORY DID NOT HOLD"
    command = f"fraudlab scenario run {s.name} --scale {summary['scale']} --seed {summary['seed']}"
    timeline_png = f"{image_prefix}timeline.png" if image_prefix else "timeline.png"
    skew_png = f"{image_prefix}skew.png" if image_prefix else "skew_features.png"
    lines = [
        f"# Scenario `{s.name}`: {s.title}",
        "",
        f"Reproduce: `{command}` ({summary['days']} simulated days, "
        f"{summary['requests']:,} requests through the real API, "
        f"{summary['wall_clock_seconds']:.0f} s wall clock). Verdict: **{verdict}**.",
        "",
        _world(result),
        "",
        "| check | result |",
        "|---|---|",
        *[
            f"| {name.replace('_', ' ')} | {'yes' if ok else '**no**'} |"
            for name, ok in checks.items()
        ],
        "",
        "## What broke",
        s.what_broke,
        "",
        "## How it showed",
        s.how_it_shows,
        "",
        "## What caught it and what the policy did",
        *_caught(summary),
        "",
        f"![timeline]({timeline_png})",
        "",
        *([f"![skew per feature]({skew_png})", ""] if skew_plot else []),
        "## What it cost",
        *_cost(summary),
        "",
        "## Recall before the labels arrive",
        *_label_free(summary),
        "",
        *_exploration(summary),
        "## What a design-round answer should say",
        s.design_answer,
        "",
        "## Day by day",
        *_table(result, summary),
        "",
        "## Normal ranges (before the fault)",
        *_ranges(summary),
        "",
        "## Events",
        *[f"- {e.at[:16].replace('T', ' ')} **{e.kind}**: {e.text}" for e in result.events],
        *([] if result.events else ["None: nothing was injected, detected or acted on."]),
        "",
        *(_files(result) if not image_prefix else _published_note(summary)),
    ]
    return "\n".join(lines)


def _world(result: RunResult) -> str:
    """The world the run is in: its own population and training calendar, shorter than
    the demo's so a story runs in a minute."""
    sim, t = result.settings.simulation, result.settings.training
    return (
        f"The world: {sim.customers:,} customers and {sim.terminals:,} terminals "
        f"({result.spec.scale} scale, seed {result.spec.seed}); the champion (LightGBM on "
        f"{t.feature_service}) was trained with the cutoff at day {result.spec.cutoff_day} "
        f"of the data (scenario day 0), {t.warmup_days} warm-up days, {t.validation_days} "
        f"validation and {t.test_days} test days, {t.gap_days}-day gaps, a {t.label_maturity_days}"
        f"-day label-maturity wait, {t.bootstrap_rounds} bootstrap rounds for the gate and a "
        f"reference sample of {t.reference_sample_rows:,} rows; the monitor runs at every "
        "simulated midnight over the day (skew samples "
        f"{result.settings.monitoring.skew_sample_rows:,} requests), {_minute_cadence(result)}."
    )


def _minute_cadence(result: RunResult) -> str:
    """When this run's minute jobs ran: the story's own cadence, else the policy's."""
    scenario = result.scenario
    if not scenario.minute_jobs:
        return "and no minute jobs (the story is told by the daily runs)"
    every = scenario.minute_jobs_every or load_policy(None).minute_jobs.every_minutes
    return f"and its minute jobs every {every:g} simulated minutes"


def _published_note(summary: dict[str, Any]) -> list[str]:
    return [
        "## About this page",
        f"Written by `fraudlab scenario run {summary['scenario']} --scale {summary['scale']} "
        f"--seed {summary['seed']} --publish` (the same run's report.md, without local "
        "paths). Rerun it to reproduce every number and plot here; the world is seeded, "
        "so the traffic is identical, and the timings of a rerun vary with the machine.",
        "",
    ]


def _files(result: RunResult) -> list[str]:
    return [
        "## Files",
        "- `summary.json`: the figures above; `timeline.json`: every day's findings and decisions",
        f"- decision log: `{result.settings.decision_log_path}`",
        f"- monitor reports (drift, skew, performance, canary JSON) per day: "
        f"`{result.settings.monitoring_dir / 'runs'}`; Evidently's HTML drift report of a "
        f"day D: `FRAUDLAB_CONFIG={result.run_dir / 'fraudlab.yaml'} fraudlab monitor run "
        "--since D --until D+1 --dry-run`",
        f"- the scoring API's log: `{result.run_dir / 'serve.log'}`",
        "",
    ]


def _catches(summary: dict[str, Any]) -> list[str]:
    """The champion and the shadow model side by side, on the same bursts."""
    catches = summary["catches"]
    lines = [
        "The champion decided; the shadow model scored the same payments and decided "
        "nothing (its decisions are logged, never acted on). A burst is one card's test "
        "payments of one day; flagged means sent to review or declined.",
        "",
        "| | "
        + " | ".join(f"{m}: {c['service']} (v{c['version']})" for m, c in catches.items())
        + " |",
        "|---|" + "---|" * len(catches),
    ]
    measures = [
        ("bursts", lambda c: f"{c['bursts']:,}"),
        (
            "bursts caught (a payment flagged)",
            lambda c: f"{c['caught']:,} ({c['caught_share']:.0%})",
        ),
        ("test payments flagged", lambda c: f"{c['flagged_share']:.0%} of {c['payments']:,}"),
        ("minutes to the first flag, median", lambda c: _fmt(c["median_minutes_to_first_flag"])),
        ("minutes to the first flag, worst", lambda c: _fmt(c["worst_minutes_to_first_flag"])),
        ("test payments declined outright", lambda c: f"{c['declined_share']:.0%}"),
        (
            "minutes to the first decline, median",
            lambda c: _fmt(c["median_minutes_to_first_decline"]),
        ),
        (
            "payments through before the first flag",
            lambda c: _fmt(c["mean_approved_before_first_flag"], ".2f"),
        ),
        ("payments scored", lambda c: f"{c['scored_share']:.1%}"),
    ]
    traffic: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("all payments: flagged (reviews or declines)", lambda t: f"{t['flagged']:,.0f}"),
        ("all payments: declined outright", lambda t: f"{t['declined']:,.0f}"),
        ("all payments: good ones flagged", lambda t: f"{t['good_flagged']:,.0f}"),
        ("all payments: approved fraud (amount)", lambda t: f"{t['fraud_approved']:,.0f}"),
        (
            f"all payments: cost (+{summary['review_cost']:g} per flag)",
            lambda t: f"{t['cost']:,.0f}",
        ),
    ]
    for name, shown in measures:
        lines.append(f"| {name} | " + " | ".join(shown(c) for c in catches.values()) + " |")
    for name, shown in traffic:
        lines.append(
            f"| {name} | " + " | ".join(shown(c["traffic"]) for c in catches.values()) + " |"
        )
    hours = summary["time_to_detect_hours"]
    lines += [
        "",
        f"Time to detect (the champion's median from a burst's first payment to its first "
        f"flag): {_fmt(hours, '.2f')} h, against a bound of {summary['detect_within_hours']:g} h.",
    ]
    return lines


def _caught(summary: dict[str, Any]) -> list[str]:
    lines = []
    if summary.get("catches") is not None:
        lines += _catches(summary)
    elif summary["detector_expected"] is None:
        alarms = summary["false_alarms"]
        lines.append(
            f"Nothing should be caught: {alarms['count']} of {alarms['monitor_runs']} monitor "
            "runs raised an alarm."
        )
        for run in alarms["runs"]:
            lines.append(f"- day {run['day']}: {', '.join(run['rules'])}")
    else:
        lines.append(
            f"- injected at {summary['injected_at'][:16]}; detected at "
            f"{(summary['detected_at'] or 'never')[:16]} by the {summary['detected_by'] or '-'} "
            f"(expected: the {summary['detector_expected']} job within "
            f"{summary['detect_within_hours']:g} h; took "
            f"{simulated_duration(summary['time_to_detect_hours'])} of simulated time)"
        )
        if summary.get("mitigated_at"):
            lines.append(
                f"- mitigated at {summary['mitigated_at'][:16]}, "
                f"{simulated_duration(summary['time_to_mitigate_hours'])} after the injection: the "
                "circuit breaker serves every decline as a review"
            )
        lines.append(f"- false alarms before the injection: {summary['false_alarms']['count']}")
        lines.append(
            f"- recovered at {(summary['recovered_at'] or 'never')[:16]} ({summary['recovery']})"
        )
    lines.append(
        f"- the minute jobs (guardrails, freshness, parity) ran {summary['minute_job_runs']:,} "
        "times, besides the daily runs"
    )
    for action in summary["actions"]:
        evidence = f" Evidence: {action['evidence']}" if action.get("evidence") else ""
        lines.append(
            f"- day {action['day']} ({action['at'][:16].replace('T', ' ')}): "
            f"**{action['action']}** by rule `{action['rule']}`: {action['outcome']}.{evidence}"
        )
    for version, trial in summary.get("challenger_trials", {}).items():
        lines.append(
            f"- challenger v{version}'s trial, label-free (last look {trial['at'][:16]}): "
            f"agreement AUC with the champion's flags {_fmt(trial['agreement_auc'], '.2f')}, "
            f"score PSI against its own reference {_fmt(trial['canary_score_psi'], '.3f')}, "
            f"guardrails broken {_fmt(trial['canary_breaches'], '.0f')}"
        )
    return lines


def cost_labels(review_cost: float) -> dict[str, str]:
    return {
        "fraud_losses": "approved fraud (amount)",
        "cost": f"cost: approved fraud + {review_cost:g} per review",
        "legit_declined": "good customers declined",
        "frauds_declined": "frauds declined outright (no analyst)",
    }


def _cost(summary: dict[str, Any]) -> list[str]:
    losses = summary["losses"]
    labels = cost_labels(summary["review_cost"])
    if "incident_days" not in losses:
        return [f"Over the run: {labels[m]} {losses[m]['total']:,.0f}." for m in labels]
    first, last = losses["incident_days"]
    has_baseline = "baseline_same_days" in losses["cost"]
    lines = [
        f"During the incident (days {first}-{last}, injection to recovery):",
        "",
        "| measure | during the incident | a day before it | baseline run, same days | "
        "incident minus baseline |",
        "|---|---|---|---|---|",
    ]
    for measure, label in labels.items():
        m = losses[measure]
        lines.append(
            f"| {label} | {m['during_incident']:,.0f} | "
            f"{_fmt(m['pre_incident_daily_mean'], ',.0f')} | "
            f"{_fmt(m.get('baseline_same_days'), ',.0f')} | "
            f"{_fmt(m.get('excess_over_baseline'), '+,.0f')} |"
        )
    if not has_baseline:
        lines += [
            "",
            "No healthy run of this world covering these days was found under the runs "
            f"folder; run `fraudlab scenario run {summary['baseline_story']}` with the same "
            "options (at least as many days) to compare day for day.",
        ]
    return lines


def _label_free(summary: dict[str, Any]) -> list[str]:
    """How the label-free recall and the recall of the labels known so far each compared
    with the truth, over the run's midnights (monitoring/performance.py)."""
    check = summary.get("label_free")  # absent from summaries written before it existed
    if not check or check["days_expected"] == 0:
        return ["No monitor run reported a label-free recall."]

    def error(key: str) -> str:
        value = check[key]
        return "-" if value is None else f"{value:.3f}"

    return [
        "Each midnight the performance job reports the champion's recall over its window "
        f"(the last {check['lookback_days']:g} days) twice: from the labels known by then, "
        "and label-free, reading each score as the probability of fraud. The truth is the "
        "simulator's, which no monitor sees.",
        "",
        "| recall | midnights with a figure | mean absolute error against the truth |",
        "|---|---|---|",
        f"| label-free (scores as probabilities) | {check['days_expected']} of {check['days']} "
        f"| {error('expected_recall_error')} |",
        f"| from the labels known by then | {check['days_known']} of {check['days']} "
        f"| {error('known_recall_error')} |",
    ]


def _exploration(summary: dict[str, Any]) -> list[str]:
    """The feedback-loop story: the model's recall as the labels say it, weighted by the
    explored declines' propensities, and in truth, at every midnight."""
    explored = summary.get("exploration")
    if not explored:
        return []

    def error(key: str) -> str:
        value = explored[key]
        return "-" if value is None else f"{value:.3f}"

    start, settle = explored["from_day"], explored["settle_days"]
    rows = [
        f"| {day} | {'on' if day >= start else 'off'} | {_fmt(naive, '.2f')} | "
        f"{_fmt(ipw, '.2f')} | {_fmt(truth, '.2f')} | {_fmt(known, '.0f')} |"
        for day, (naive, ipw, truth, known) in enumerate(
            zip(
                explored["naive_recall"],
                explored["ipw_recall"],
                explored["truth"],
                explored["explored_frauds_known"],
                strict=True,
            )
        )
    ]
    return [
        "## The model's recall, with and without exploration",
        f"Exploration ({explored['share']:.0%} of the model's reviews and declines approved "
        f"at random) from day {start}. Each midnight the performance job reads the model's "
        "recall from the labels known by then (`recall`), and with each known fraud weighted "
        "by one over the chance that its label is known by now (`ipw_recall`: an explored "
        "decline's logged propensity, times the share of frauds of its age already charged "
        "back; monitoring/performance.py `observation_weights`). The truth is the "
        "simulator's recall of the model's own decisions over the same window.",
        "",
        "| mean absolute error against the truth | naive (labels as known) | weighted |",
        "|---|---|---|",
        f"| before exploration (days 0-{start - 1}) | {error('naive_error_before')} | "
        "same: no weight differs from 1 |",
        f"| from day {start + settle} (exploration {settle} days old: its first chargebacks "
        f"are in) | {error('naive_error_settled')} | {error('ipw_error_settled')} |",
        "",
        f"What it cost: {explored['frauds_explored']} frauds the model had flagged went "
        f"through, {_fmt(explored['explored_losses_per_day'], ',.0f')} a day in fraud "
        "losses, on top of what the model itself missed.",
        "",
        "| day | exploration | recall (labels as known) | recall (weighted) | recall of the "
        "model (truth) | explored frauds known |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _ranges(summary: dict[str, Any]) -> list[str]:
    """Min and max of each monitored figure on the healthy days: the yardstick."""
    ranges = summary["normal_ranges"]
    if not ranges:
        return ["No healthy day before the fault."]
    return [
        "| figure | min | max |",
        "|---|---|---|",
        *[
            f"| {name.replace('_', ' ')} | {lo:,.4g} | {hi:,.4g} |"
            for name, (lo, hi) in ranges.items()
        ],
    ]


def _table(result: RunResult, summary: dict[str, Any]) -> list[str]:
    lines = [
        "| day | date | requests | flagged | declined | fraud losses | cost | drift share | "
        "skew worst | recall | recall (label-free) | recall (truth) | precision | policy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lookback = summary["label_free"]["lookback_days"]
    for r in result.records:
        named = [
            f"{d['action']}{'' if d['taken'] else ' (held)'} ({d['rule']})" for d in r.decisions
        ]
        counts = Counter(named)
        policy = ", ".join(n + (f" x{counts[n]}" if counts[n] > 1 else "") for n in counts)
        lines.append(
            f"| {r.day} | {r.date[:10]} | {r.requests:,} | {r.review_rate:.1%} | "
            f"{r.decline_rate:.1%} | {r.fraud_losses:,.0f} | {r.cost:,.0f} | "
            f"{_fmt(r.metric('drift', 'drift_share'), '.0%')} | "
            f"{_fmt(r.metric('skew', 'max_mismatch_rate'), '.0%')} | "
            f"{_fmt(r.metric('performance', 'recall'), '.2f')} | "
            f"{_fmt(r.metric('performance', 'expected_recall'), '.2f')} | "
            f"{_fmt(true_recall(result.records, r.day, lookback), '.2f')} | "
            f"{_fmt(r.metric('performance', 'precision'), '.2f')} | {policy or '-'} |"
        )
    return lines
