"""A lab the monitor runs: an lb in front of a pool of up to four hello workers, scaled by load.

Use it with: BOOTED_ENVIRONMENTS=examples/monitor.py fab env_start_min && fab monitor_start
"""

ENVIRONMENTS = {
    "lab": {
        "provider": "netns",
        "network": "10.213.10.0/24",
        "hosts": {
            "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
            "web[01:04]": {"role": "worker", "service": "hello", "version": "1.0"},
        },
        "min": {"lb": 1, "worker": 2},
        "max": {"worker": 4},
        "target": {"worker": 10},
        "monitor": {"interval": 2, "window": 60},
    },
}
