"""advseg.slurm: what profiles/slurm reads from scontrol and sinfo, and when it stops.

The texts are those of Debian's SLURM 22.05 (`scontrol show config`, `sinfo --noheader
--Node --format=%P|%m|%G|%l`); tests/test_slurm.py runs the profile on a real cluster.
"""

from __future__ import annotations

import pytest

from advseg.slurm import ProfileError, SlurmCluster, parse_minutes

NO_DBD = "AccountingStorageType   = accounting_storage/none\nMinJobAge               = 300 sec\n"
WITH_DBD = "AccountingStorageType   = accounting_storage/slurmdbd\nMinJobAge               = 300 sec\n"
NODES = ("cpu*|192000|(null)|1-00:00:00\n"
         "cpu*|515000|(null)|1-00:00:00\n"
         "gpu|256000|gpu:a100:4(S:0-1)|2-00:00:00\n"
         "gpu|128000|gpu:v100:2|2-00:00:00\n"
         "debug|22000|gpu:0|30:00\n")


def cluster(config: str = NO_DBD, nodes: str = NODES, partition: str = "") -> SlurmCluster:
    return SlurmCluster.parse(config, nodes, partition)


def stop_message(call) -> str:
    with pytest.raises(ProfileError) as stopped:
        call()
    assert stopped.value.code.startswith("profiles/slurm/config.yaml: ")
    return stopped.value.code


def test_the_default_partition_and_its_nodes():
    found = cluster()
    assert found.partition == "cpu" and found.time_limit_min == 1440
    assert [node.memory_mb for node in found.nodes] == [192000, 515000]
    assert cluster(partition="gpu").nodes[0].gpus == 4 and cluster(partition="gpu").nodes[0].gpu_models == {"a100"}


def test_job_states_come_from_squeue_without_accounting_and_from_sacct_with_it():
    assert (cluster().accounting, cluster().status_command) == (False, "squeue")
    assert (cluster(WITH_DBD).accounting, cluster(WITH_DBD).status_command) == (True, "sacct")


def test_squeue_that_forgets_finished_jobs_too_soon_stops_the_profile():
    message = stop_message(lambda: cluster(NO_DBD.replace("300 sec", "60 sec")).status_command)
    assert "MinJobAge=60 s" in message and "MinJobAge >= 180" in message
    assert cluster(WITH_DBD.replace("300 sec", "60 sec")).status_command == "sacct"


def test_a_request_that_fits_is_returned_unchanged():
    found = cluster(partition="gpu")
    assert (found.memory("train", 256000), found.minutes("train", 2880), found.gpus("train", 4, "a100")) \
        == (256000, 2880, 4)
    assert found.gpus("train", 0, "h100") == 0


def test_memory_beyond_every_node_names_the_key_and_the_largest_node():
    message = stop_message(lambda: cluster(partition="debug").memory("download", 32000))
    assert "download jobs ask for mem_mb=32000" in message and "partition debug has 22000 MB" in message
    assert "Lower set-resources.download.mem_mb" in message and "SBATCH_PARTITION" in message
    assert "default-resources.mem_mb" in stop_message(lambda: cluster(partition="debug").memory("default", 64000))


def test_time_beyond_the_partitions_limit_names_the_key():
    message = stop_message(lambda: cluster(partition="debug").minutes("train", 720))
    assert "train jobs ask for runtime=720 min" in message and "allows 30 min" in message
    assert "set-resources.train.runtime" in message
    assert cluster(nodes="cpu*|8000|(null)|infinite\n").minutes("train", 10**6) == 10**6


def test_gpus_the_partition_lacks_name_what_to_set():
    no_gpus = stop_message(lambda: cluster().gpus("attack", 1))
    assert "attack jobs ask for 1 GPU, but partition cpu has no GPUs" in no_gpus and "ADVSEG_SLURM_GPUS" in no_gpus
    wrong_model = stop_message(lambda: cluster(partition="gpu").gpus("train", 1, "h100"))
    assert "1 GPU of model h100" in wrong_model and "(a100, v100)" in wrong_model
    assert "ADVSEG_SLURM_GPU_MODEL" in wrong_model
    too_many = stop_message(lambda: cluster(partition="gpu").gpus("train", 8))
    assert "at most 4 GPUs per node" in too_many


def test_an_unknown_or_missing_partition_lists_the_partitions():
    assert "SBATCH_PARTITION=gpus: sinfo lists no partition gpus; choose from cpu, debug, gpu" in \
        stop_message(lambda: cluster(partition="gpus"))
    assert "no default partition: set SBATCH_PARTITION to one of cpu, debug, gpu" in \
        stop_message(lambda: cluster(nodes=NODES.replace("*", "")))


def test_a_list_of_partitions_offers_what_any_of_them_has():
    both = cluster(partition="debug,gpu")
    assert both.memory("train", 256000) == 256000 and both.minutes("train", 2880) == 2880
    assert "no partition gpus" in stop_message(lambda: cluster(partition="debug,gpus"))


@pytest.mark.parametrize("limit, minutes", [
    ("infinite", None), ("UNLIMITED", None), ("30", 30), ("30:30", 30), ("2:00:00", 120),
    ("1-00:00:00", 1440), ("1-12", 2160), ("2-01:30", 2970),
])
def test_slurm_time_limits_in_minutes(limit, minutes):
    assert parse_minutes(limit) == minutes
