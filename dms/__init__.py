"""DMS: an observatory data management system with a database at its center."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dms")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
