"""Keep an OpenBao/Vault plugin catalog and mount table equal to a desired-state file."""

__version__ = "0.1.0"
