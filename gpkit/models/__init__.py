"""Ready models that a BoTorch user fits with :func:`gpkit.fit` and queries with ``posterior``."""

from gpkit.models.dklgp import DKLGP
from gpkit.models.dual_memory import DualMemoryGP
from gpkit.models.etgp import ETGP
from gpkit.models.rvgp import RVGP
from gpkit.models.swsgp import SWSGP

__all__ = ["DKLGP", "DualMemoryGP", "ETGP", "RVGP", "SWSGP"]
