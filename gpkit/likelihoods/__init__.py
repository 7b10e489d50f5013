"""One-dimensional likelihoods that GPyTorch does not ship (all work with any gpkit model)."""

from gpkit.likelihoods.count_and_binary import BernoulliLogitLikelihood, ExpLinkPoissonLikelihood

__all__ = ["BernoulliLogitLikelihood", "ExpLinkPoissonLikelihood"]
