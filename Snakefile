# advseg: how vulnerable are medical image segmentation models to adversarial attacks?
#
#   download -> tracking -> train -> checkpoint -> attack -> perturbations -> transfer -> aggregate
#
# Each rule calls one `advseg <step>` command (perturbations, which only lists files, one
# function); the logic lives in the advseg package.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
