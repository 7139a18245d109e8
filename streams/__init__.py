"""cs-relay: Segment messages from Kafka to customer-success platforms (README.md)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cs-relay")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
