"""The package's version, in one place (``fastworker.__version__``, the
discovery beacon's announcement)."""

VERSION = "0.1.0.dev0"
