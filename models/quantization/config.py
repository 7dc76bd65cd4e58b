"""`QuantConfig`: how a model is quantized; shared by NNX modules and Keras layers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# --- configuration ---------------------------------------------------------------------------

PARTS = ("weights", "activations", "state", "nonlinearities", "membrane", "inputs")


@dataclass(frozen=True)
class QuantConfig:
    """How a model is quantized; shared by NNX modules and Keras layers (`quantization=`).

    weight_bits: 8 or 4 (symmetric, signed). activation_bits: 8 or 16 (asymmetric).
    state_bits: 8 or 16 for liquid states. membrane_bits: 16 for spiking membranes.
    per_channel: weights per output channel (else per tensor).
    power_of_two: round every chosen scale up to a power of two.
    keep_float: parts left in float, any of PARTS.
    observer: "minmax" or "percentile"; momentum: EMA factor (None = running min/max);
    percentile: for the percentile observer.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    state_bits: int = 8
    membrane_bits: int = 16
    per_channel: bool = True
    power_of_two: bool = False
    keep_float: frozenset[str] = field(default_factory=frozenset)
    observer: str = "minmax"
    momentum: float | None = None
    percentile: float = 99.99

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_float", frozenset(self.keep_float))
        if self.weight_bits not in (4, 8):
            raise ValueError(f"weight_bits must be 4 or 8, got {self.weight_bits}")
        if self.activation_bits not in (8, 16):
            raise ValueError(f"activation_bits must be 8 or 16, got {self.activation_bits}")
        if self.state_bits not in (8, 16):
            raise ValueError(f"state_bits must be 8 or 16, got {self.state_bits}")
        if self.membrane_bits not in (8, 16):
            raise ValueError(f"membrane_bits must be 8 or 16, got {self.membrane_bits}")
        unknown = self.keep_float - set(PARTS)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
        if self.observer not in ("minmax", "percentile"):
            raise ValueError(f"observer must be 'minmax' or 'percentile', got {self.observer}")
        if self.momentum is not None and not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def quantizes(self, part: str) -> bool:
        """True if `part` (one of PARTS) is quantized."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
        return part not in self.keep_float

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["keep_float"] = sorted(self.keep_float)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown QuantConfig fields {sorted(unknown)}")
        return cls(**{**d, "keep_float": frozenset(d.get("keep_float", ()))})


