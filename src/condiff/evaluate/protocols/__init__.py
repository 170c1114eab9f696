"""Evaluation protocols, one small object each: ``default`` (a run's own held-out images, a
paired folder, or clean images degraded by the run's task) and the field's ``sr``, ``denoise``
and ``jpeg`` protocols on their test sets."""

from condiff.evaluate.protocols.base import Metric, Protocol, Published
from condiff.evaluate.protocols.default import DefaultProtocol
from condiff.evaluate.protocols.denoise import DenoiseProtocol
from condiff.evaluate.protocols.jpeg import JpegProtocol
from condiff.evaluate.protocols.sr import SRProtocol

PROTOCOLS = ("default", "sr", "denoise", "jpeg")

__all__ = [
    "PROTOCOLS",
    "DefaultProtocol",
    "DenoiseProtocol",
    "JpegProtocol",
    "Metric",
    "Protocol",
    "Published",
    "SRProtocol",
]
