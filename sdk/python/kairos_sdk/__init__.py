"""Kairos server SDK: decide evaluated in your process, from the project's compiled snapshot."""

from kairos_sdk.client import KairosClient

__all__ = ["KairosClient"]
