"""Your lab environments. booted reads ENVIRONMENTS from this file (or the file BOOTED_ENVIRONMENTS names).

Each environment: a provider ("netns" namespaces, "qemu" VMs), a private network (the first address is
the gateway where booted's nginx listens), hosts (a name or a range like web[01:04]; zero padding kept)
and, optionally, the minimum count per role that env_start_min starts.
"""

ENVIRONMENTS = {
    "lab": {
        "provider": "netns",
        "network": "10.213.7.0/24",
        "hosts": {
            "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
            "web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"},
        },
        "min": {"lb": 1, "worker": 1},
    },
}
