"""The naming rules user input is checked against, each defined once (and named for what it checks)."""

from __future__ import annotations

import re

# a host, environment, host image or hypervisor name: a DNS label (it becomes a hostname and a file name)
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}\Z")
# a service folder's name: also the prefix of its tasks and of its <NAME>_REPO variable, so no '-'
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9]{0,30}\Z")
# a service version: a git tag, branch or commit (it becomes part of a file name and a URL)
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# a Debian package name (Debian policy 5.6.1)
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{1,62}\Z")
# a snapshot's name (per environment): it becomes a folder name under the state directory
SNAPSHOT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}\Z")
