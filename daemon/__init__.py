"""nightshift: a proactive always-on ops agent daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nightshift-agent")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
