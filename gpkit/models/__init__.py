from gpkit.models.swsgp import SWSGP  # noqa: F401
from gpkit.models.dklgp import DKLGP  # noqa: F401
