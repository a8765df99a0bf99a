"""Clients of the scoring API: what a payment gateway and an operator would run.

`replay` sends payments (from the simulator or a user's table) to POST /v1/score and
tallies the answers; `admin` is the operator's side (reload, routing) the monitor's
actions use; `http` is the small HTTP/1.1 load generator both the replay and the
serving benchmark drive the API with. None of it is part of the API itself.
"""
