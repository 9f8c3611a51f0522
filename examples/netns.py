"""Labs as Linux namespaces (provider netns): sub-second boots, ~2 MB per host; for big labs and fast tests.

Use it with: BOOTED_ENVIRONMENTS=examples/netns.py fab env_start_all --env lab
"""

ENVIRONMENTS = {
    "lab": {
        "provider": "netns",
        "network": "10.213.8.0/24",
        "hosts": {
            "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
            "web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"},
        },
        "min": {"lb": 1, "worker": 1},
    },
    "big": {
        "provider": "netns",
        "network": "10.213.9.0/24",
        "hosts": {
            "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
            "web[001:050]": {"role": "worker", "service": "hello", "version": "1.0"},
        },
        "min": {"lb": 1, "worker": 2},
    },
}
