"""Test order for two workers (``-n 2 --dist loadfile``): the longest files start first.

A worker takes one test file at a time, in collection order; files that run Snakemake
workflows or a SLURM cluster take minutes, the rest seconds. Started last, a long file
would leave the other worker idle at the end.
"""

LONGEST_FIRST = ("test_workflow.py", "test_slurm.py", "test_own_data.py", "test_tracking.py",
                 "test_config_errors.py", "test_faults.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, the written order
