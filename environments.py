"""Your lab environments. booted reads ENVIRONMENTS from this file (or the file BOOTED_ENVIRONMENTS names).

Each environment: a provider ("qemu" VMs, "netns" namespaces), a private network (the first address is
the gateway where booted's nginx listens), hosts (a name or a range like web[01:04]; zero padding kept)
and, optionally, the minimum count per role that env_start_min starts.

The example: a load balancer in front of two hello workers, as real VMs (QEMU; KVM when it works, else
TCG software emulation). examples/netns.py is the same lab as namespaces, and a 50-host one.
"""

ENVIRONMENTS = {
    "lab": {
        "provider": "qemu",
        "network": "10.213.7.0/24",
        "hosts": {
            "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
            "web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"},
        },
        "min": {"lb": 1, "worker": 1},
    },
}
