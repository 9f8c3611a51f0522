"""Impaired links: delay, jitter, loss and rate on the controller's side of a host's NIC (spec.py: what
the user writes; kernel.py: tc, nftables and the delay line; links.py: a lab's records and hosts)."""
