"""The GPyTorch baselines that gpkit's benchmarks, demos and tutorials compare against.

All train with :func:`gpkit.fit`: ``SVGPBaseline`` through the ``train_X``/``train_Y``/``likelihood`` options,
``VNNGPBaseline`` through its ``batch_loss``, the vector-field baselines of RVGP (``EuclideanVectorGP``,
``ScalarLaplacianVectorGP``) through their full-batch ``loss``.
"""

from gpkit.baselines.classification import DirichletSVGPBaseline, MulticlassSVGPBaseline
from gpkit.baselines.cox import LGCPBaseline
from gpkit.baselines.regression import SVGPBaseline, VNNGPBaseline
from gpkit.baselines.vector_fields import EuclideanVectorGP, ScalarLaplacianVectorGP

__all__ = [
    "DirichletSVGPBaseline",
    "EuclideanVectorGP",
    "LGCPBaseline",
    "MulticlassSVGPBaseline",
    "SVGPBaseline",
    "ScalarLaplacianVectorGP",
    "VNNGPBaseline",
]
