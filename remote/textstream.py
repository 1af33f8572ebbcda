"""The team server's text stream is the engine's: model/textstream.py (kept here for importers)."""

from codeassist.model.textstream import TextStream

__all__ = ["TextStream"]
