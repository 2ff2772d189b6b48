"""Whereabouts in Python: a cluster-wide IPAM plugin for CNI."""

__version__ = "0.1.0"
