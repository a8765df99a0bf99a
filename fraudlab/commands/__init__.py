"""CLI commands, one module per plane; fraudlab/cli.py wires them into one app."""
