"""Chaos runs: load through the lb, failures on a schedule, heals timed by the monitor, and a report."""
