"""BoTorch acquisition functions for gpkit models (Gaussian Cox processes: on the intensity scale)."""

from gpkit.acquisition.cox import (
    ChangePointScore,
    ExpectedArrivals,
    IdleTime,
    IntensityExpectedImprovement,
    IntensityProbabilityOfImprovement,
    IntensityUpperConfidenceBound,
)

__all__ = [
    "ChangePointScore",
    "ExpectedArrivals",
    "IdleTime",
    "IntensityExpectedImprovement",
    "IntensityProbabilityOfImprovement",
    "IntensityUpperConfidenceBound",
]
