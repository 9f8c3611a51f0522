"""The lab handle: one environment on this machine, and what is done to it."""
