"""advseg: how vulnerable are medical image segmentation models to adversarial attacks?

The package holds the logic; the Snakemake workflow at the repository root calls one
``advseg <step>`` command per rule (see :mod:`advseg.cli`).
"""

__version__ = "0.1.0"
