"""The one error family of cvops.engines: every failure carries a reason fit to show a user."""

from __future__ import annotations


class EnginesError(Exception):
    """A conversion, parity or engine failure; ``str(err)`` is the user-facing reason."""


class ExportError(EnginesError):
    """The model could not be exported to ONNX; ``op`` names the operator at fault when known."""

    def __init__(self, message: str, op: str | None = None) -> None:
        super().__init__(message)
        self.op = op


class ConversionError(EnginesError):
    """An ONNX model could not be converted to a target (bad model, bad calibration data)."""


class CalibrationError(ConversionError):
    """The calibration set does not fit the model (shape, dtype, emptiness)."""


class EngineUnavailable(EnginesError):
    """An engine's runtime is absent or refuses this host; never faked, always said."""


class EngineFailure(EnginesError):
    """An engine that was available failed to load or to run."""
