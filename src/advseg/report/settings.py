"""The config's ``report`` section as the aggregate step uses it (defaults live in the schema).

Besides the section, the step needs the training loss (the study's "training loss" of claim 3),
and the two eps the workflow resolves from null.
"""

from __future__ import annotations

from dataclasses import dataclass

from advseg.statistics import MULTIPLICITY
from advseg.report.units import metric_columns

FAMILIES = ("table", "model", "eps")
MIN_BOOTSTRAP = 1000


@dataclass(frozen=True)
class ReportSettings:
    """How results are summarised and judged; see workflow/schemas/config.schema.yaml, section report."""

    metric: str                    # dice | dice_study: the protocol behind every comparison
    correlation_eps: float         # eps of the size question (the workflow resolves null: the middle eps)
    transfer_eps: float            # eps of the transfer table
    alpha: float                   # level of every test; intervals are at 1 - alpha
    multiplicity: str              # holm | bh | none, over each family of tests
    family: str                    # table | model | eps: what one family of loss comparisons is
    min_units: int                 # fewer independent units: no interval, no verdict
    min_clean_score: float         # models below it are left out of the size correlation
    negligible_correlation: float  # |rho| below it counts as no correlation worth the name
    n_bootstrap: int               # resamples (bootstrap, random sign flips and permutations)
    seed: int                      # of every resample
    training_loss: str             # the loss the models were trained with: the study's "training loss"

    def __post_init__(self):
        metric_columns(self.metric)
        for key, value, choices in (("multiplicity", self.multiplicity, MULTIPLICITY),
                                    ("family", self.family, FAMILIES)):
            if value not in choices:
                raise ValueError(f"report.{key}: unknown value {value!r}; choose one of: {', '.join(choices)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"report.alpha: {self.alpha} must lie in (0, 1)")
        if self.min_units < 2:
            raise ValueError(f"report.min_units: {self.min_units}; no interval can rest on fewer than 2 units")
        if self.n_bootstrap < MIN_BOOTSTRAP:
            raise ValueError(f"report.n_bootstrap: {self.n_bootstrap} resamples; use at least {MIN_BOOTSTRAP}")
        for key in ("correlation_eps", "transfer_eps"):
            if getattr(self, key) is None:
                raise ValueError(f"report.{key}: give the eps (the workflow resolves null to the middle attacked eps)")
        if not 0 <= self.negligible_correlation < 1:
            raise ValueError(f"report.negligible_correlation: {self.negligible_correlation} must lie in [0, 1)")

    @property
    def level(self) -> float:
        """Confidence level of every interval: the level at which verdicts are read."""
        return 1 - self.alpha

    def too_few(self, n: int) -> bool:
        return n < self.min_units
