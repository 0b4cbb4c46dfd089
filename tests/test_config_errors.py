"""A bad config stops Snakemake before any job, naming the key, and writes nothing.

Every rule is checked in-process through the function the Snakefile calls; a few
cases go through Snakemake itself to show the message reaches the user and nothing
is written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advseg.config import validate_config

pytestmark = pytest.mark.slow  # Snakemake runs on bad and large configs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOOD_MODEL = "models:\n  - {arch: Unet, encoder: resnet18}\n"


def merged_config(user_yaml: str) -> dict:
    """config.yaml updated with a user's --configfile, key by key as Snakemake merges them."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load(user_yaml))
    return config


def run_snakemake(directory: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Snakemake on a copy of the workflow in ``directory``."""
    for name in ("Snakefile", "config.yaml", "workflow", "envs"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, directory / name)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "snakemake"), "--cores", "1", *args], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("config, message", [
    ("models:\n  - {arch: Unet, encoder: resnet19}\n", "models[0].encoder: unknown value 'resnet19' (did you mean 'resnet18'?)"),
    ("models:\n  - {arch: UNet3D, encoder: resnet18}\n", "models[0].arch: unknown value 'UNet3D'"),
    ("models: []\n", "models: [] should be non-empty"),
    (GOOD_MODEL + "attack: {epsilons: [0.01, 1.5]}\n", "attack.epsilons[1]: 1.5 is greater than the maximum of 1"),
    (GOOD_MODEL + "attack: {epsilons: [0.01, 0.01]}\n", "attack.epsilons: [0.01, 0.01] has non-unique elements"),
    (GOOD_MODEL + "attack: {losses: [hinge]}\n", "attack.losses[0]: 'hinge' is not one of"),
    (GOOD_MODEL + "training: {epochs: ten}\n", "training.epochs: 'ten' is not of type 'integer'"),
    (GOOD_MODEL + "trainig: {epochs: 3}\n", "'trainig' was unexpected"),
    (GOOD_MODEL + "data: {folds: 5, folds_to_run: [0, 5]}\n",
     "data.folds_to_run: fold 5 must be smaller than data.folds (5)"),
    (GOOD_MODEL + "seeds: []\n", "seeds: [] should be non-empty"),
    (GOOD_MODEL + "report: {correlation_eps: 0.3}\n", "report.correlation_eps: 0.3 is not one of attack.epsilons"),
    (GOOD_MODEL + "report: {transfer_eps: 0.3}\n", "report.transfer_eps: 0.3 is not one of attack.epsilons"),
    (GOOD_MODEL + "report: {metric: iou}\n", "report.metric: 'iou' is not one of ['dice', 'dice_study']"),
    (GOOD_MODEL + "attack: {methods: [fgsm, pgdd]}\n", "attack.methods[1]: 'pgdd' is not one of"),
    (GOOD_MODEL + "attack: {method: bim}\n", "attack.method: 'bim' is not one of"),
    (GOOD_MODEL + "attack: {pgd: {steps: 0}}\n", "attack.pgd.steps: 0 is less than the minimum of 1"),
    (GOOD_MODEL + "attack: {segpgd: {alpha: 0}}\n", "attack.segpgd.alpha: 0 is less than or equal to the minimum of 0"),
    (GOOD_MODEL + "attack: {cospgd: {restarts: 0}}\n", "attack.cospgd.restarts: 0 is less than the minimum of 1"),
    (GOOD_MODEL + "attack: {step: [standard, studdy]}\n", "attack.step: unknown value 'studdy' (did you mean 'study'?)"),
    (GOOD_MODEL + "attack: {input: rgb}\n", "attack.input: unknown value 'rgb'"),
    (GOOD_MODEL + "attack: {loss_argument_order: swapped}\n", "attack.loss_argument_order: unknown value 'swapped'"),
    (GOOD_MODEL + "attack: {methods: [segpgd], losses: [dicefocal]}\n", "attack: no method, variant and loss combine"),
    ("models:\n  - {arch: Unet, encoder: resnet18}\n  - {arch: Unet, encoder: resnet18, name: Unet-resnet18}\n",
     "models[1]: 'Unet-resnet18' is configured twice"),
    ("models:\n  - {arch: UnetPlusPlus, encoder: mit_b0}\n  - {arch: DPT, encoder: resnet18}\n",
     "models[0]: smp cannot build UnetPlusPlus with encoder 'mit_b0'"),
    ("models:\n  - {arch: UnetPlusPlus, encoder: mit_b0}\n  - {arch: DPT, encoder: resnet18}\n",
     "models[1]: smp cannot build DPT with encoder 'resnet18'"),
    ("models:\n  - {arch: Unet, encoder: tu-no_such_model}\n", "models[0]: smp cannot build Unet with encoder 'tu-no_such_model'"),
    (GOOD_MODEL + "transfer: {sources: [Unet-resnet19]}\n",
     "transfer.sources: unknown value 'Unet-resnet19' (did you mean 'Unet-resnet18'?)"),
    (GOOD_MODEL + "transfer: {targets: [unet]}\n", "transfer.targets: unknown value 'unet'"),
    ("models:\n  - {arch: Unet, encoder: resnet18}\n  - {arch: Linknet, encoder: resnet18}\n"
     "transfer: {sources: [Unet-resnet18], targets: [Unet-resnet18]}\n",
     "transfer: sources and targets name only 'Unet-resnet18'"),
    (GOOD_MODEL + "attack: {losses: [bce, js]}\n", "attack.losses: js is SEA's loss for apgd; add apgd"),
    (GOOD_MODEL + "defenses: [none, armour]\n", "defenses[1]: 'armour' is not one of"),
    (GOOD_MODEL + "defenses: [ensemble]\n", "defense.ensemble.models: an ensemble needs at least 2 models"),
    (GOOD_MODEL + "defenses: [ensemble]\ndefense: {ensemble: {models: [Unet-resnet18, FPN-resnet18]}}\n",
     "defense.ensemble.models: unknown value 'FPN-resnet18'"),
    ("models:\n  - {arch: Unet, encoder: resnet18}\n  - {arch: Unet, encoder: resnet34, name: ensemble}\n"
     "defenses: [ensemble]\n", "models[1]: the name 'ensemble' is the ensemble's"),
    ("models:\n  - {arch: Unet, encoder: resnet18}\n  - {arch: Linknet, encoder: resnet18, in_channels: 1}\n"
     "defenses: [ensemble]\n", "defense.ensemble.models: the members take different in_channels"),
    (GOOD_MODEL + "defenses: [noise]\ndefense: {noise: {sigma: 0}}\n",
     "defense.noise.sigma: 0 is less than or equal to the minimum of 0"),
    (GOOD_MODEL + "defenses: [pgd_at]\nattack: {methods: [fgsm, apgd], losses: [js]}\n",
     "defense.transfer_method: pgd takes none of attack.losses ['js']"),
])
def test_bad_config_is_refused_naming_the_key(tmp_path, config, message):
    with pytest.raises(ValueError) as error:
        validate_config(merged_config(config), build_cache=tmp_path / "buildable.json")
    assert message in str(error.value)


@pytest.mark.parametrize("config, message", [
    (GOOD_MODEL + "attack: {pgd: {steps: 0}}\n", "invalid config: attack.pgd.steps: 0 is less than the minimum of 1"),
    (GOOD_MODEL + "attack: {step: [standard, studdy]}\n", "invalid config: attack.step: unknown value 'studdy'"),
])
def test_bad_config_stops_snakemake_before_any_job(tmp_path, config, message):
    (tmp_path / "bad.yaml").write_text(config)
    result = run_snakemake(tmp_path, "--configfile", "bad.yaml")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_uwmadison_without_its_data_is_refused_before_any_job(tmp_path):
    result = run_snakemake(tmp_path, "--configfile", str(REPO / "workflow/configs/uwmadison_study.yaml"))
    assert result.returncode != 0
    assert "data.uwmadison.root: '/path/to/uw-madison-gi-tract-image-segmentation' is not a folder" in result.stderr
    assert not (tmp_path / "results").exists()


def test_study_config_plans_the_studys_grid(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "root.yaml").write_text(f"data: {{uwmadison: {{root: {tmp_path / 'data'}}}}}\n")
    result = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "workflow/configs/uwmadison_study.yaml"),
                           str(tmp_path / "root.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^train\s+4$", result.stdout, re.M) and re.search(r"^attack\s+8$", result.stdout, re.M)
    assert "results/uwmadison/attacks/Unet-vgg13/fold_0/seed_42/fgsm/study-study-channels/dicefocal/" \
           "eps_0.001.json" in result.stdout


def test_other_epsilons_need_no_other_report_key(tmp_path):
    """Keys a user does not set keep config.yaml's values; the correlation eps follows the new grid."""
    (tmp_path / "eps.yaml").write_text("attack: {epsilons: [0.1, 0.2, 0.3]}\n")
    result = run_snakemake(tmp_path, "-n", "--configfile", "eps.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "eps_0.2.example.npz" in result.stdout and "eps_0.02" not in result.stdout


def test_each_fold_and_seed_lists_its_own_perturbations_for_transfer(tmp_path):
    (tmp_path / "replicates.yaml").write_text("seeds: [0, 1]\ndata: {folds_to_run: [0, 1]}\n")
    result = run_snakemake(tmp_path, "-n", "--configfile", "replicates.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert (counts["perturbations"], counts["transfer"], counts["attack"]) == ("4", "16", "96")  # 6 attacks each
    listed = re.findall(r"^rule perturbations:\n(?:.*\n)*?    input: (.*)\n(?:.*\n)*?    output: (.*)$", result.stdout,
                        re.M)
    assert len(listed) == 4
    for inputs, output in listed:
        replicate = re.search(r"fold_\d+/seed_\d+", output).group()
        assert len(inputs.split(", ")) == 24 and all(f"/{replicate}/" in path for path in inputs.split(", "))


def test_a_large_grid_plans_every_job(tmp_path):
    """10 architectures x 10 encoders x 4 losses x 10 eps: the job counts follow the axes."""
    archs = ["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN",
             "UPerNet"]
    encoders = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet-b0", "resnet101", "efficientnet-b1",
                "se_resnext50_32x4d", "se_resnet50", "resnext50_32x4d"]
    models = "".join(f"  - {{arch: {arch}, encoder: {encoder}}}\n" for arch in archs for encoder in encoders)
    epsilons = ", ".join(f"0.0{i}" for i in range(10))
    (tmp_path / "grid.yaml").write_text(f"models:\n{models}attack: {{methods: [fgsm], study_protocol: false, losses: "
                                        f"[bce, dicefocal, dice, focal], epsilons: [{epsilons}]}}\n"
                                        "report: {correlation_eps: null}\n")
    result = run_snakemake(tmp_path, "-n", "--configfile", "grid.yaml", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert (counts["train"], counts["checkpoint"], counts["attack"]) == ("100", "100", "400")
    # past transfer.all_pairs_up_to models, no transfer unless the config names sources and targets
    assert "transfer" not in counts and "perturbations" not in counts
    assert "transfer: none, as the grid's 100 models are more than transfer.all_pairs_up_to (10)" in result.stderr


def test_transfer_replays_the_named_sources_on_the_named_targets(tmp_path):
    """config.yaml's 4 models; one source, two targets: the source itself is no target of its own."""
    (tmp_path / "transfer.yaml").write_text("transfer: {sources: [Unet-resnet18], "
                                            "targets: [Linknet-resnet18, Unet-resnet18]}\n")
    result = run_snakemake(tmp_path, "-n", "--configfile", "transfer.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert (counts["attack"], counts["perturbations"], counts["transfer"]) == ("24", "1", "1")
    inputs = re.search(r"^rule perturbations:\n(?:.*\n)*?    input: (.*)$", result.stdout, re.M).group(1).split(", ")
    assert len(inputs) == 6 and all("/attacks/Unet-resnet18/" in path for path in inputs), inputs
    assert "output: results/transfer/Linknet-resnet18/fold_0/seed_42.json" in result.stdout
