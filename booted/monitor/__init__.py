"""The monitor: keeps an environment healthy and sized to its load, through the same engine the tasks use."""
