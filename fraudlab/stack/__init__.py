"""The production stack: its services defined once (`services`), run as local processes
by `fraudlab stack up|down|status` (`processes`), and run as containers by
docker-compose.yml with the same commands (tests/stack checks that the two agree).
`exporter` serves the monitor's latest findings to Prometheus.
"""
