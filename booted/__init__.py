"""booted: build and run virtual lab environments from one machine."""

__version__ = "0.1.0"
