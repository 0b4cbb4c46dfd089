"""The results layer, one pass: load -> unit scores -> statistics -> tables, claims and plots.

- :mod:`advseg.report.runs`: the attack results on disk, checked, and the per-slice worst case;
- :mod:`advseg.report.units`: one row per (run, unit): every score aggregated per independent unit;
- :mod:`advseg.report.tables`: summary, replicate and transfer tables with hierarchical-bootstrap intervals;
- :mod:`advseg.report.comparisons`: which attack loss is stronger, sign-flip tests with multiplicity control;
- :mod:`advseg.report.size`: does model size predict attack success (one point per model);
- :mod:`advseg.report.claims`: the study's claims, each with a verdict the data can carry;
- :mod:`advseg.report.plots`, :mod:`advseg.report.sanity`: figures and checks of the attacks.

Nothing here imports torch: the report job stays light.
"""
