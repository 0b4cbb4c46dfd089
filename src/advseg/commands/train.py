"""advseg train: train one architecture x encoder on one fold with one seed, logging every epoch to MLflow."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from advseg.commands import (add_compute_arguments, add_data_arguments, add_defense_arguments, add_in_channels_argument,
                             add_tracking_argument, defense_settings)

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    add_tracking_argument(parser)
    add_compute_arguments(parser, batch_size=False)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--name", default=None, help="the model's name in paths and tables (default arch-encoder)")
    parser.add_argument("--encoder-weights", default=None, help="pretrained encoder weights, e.g. imagenet")
    add_in_channels_argument(parser, "3: grey copied to 3 channels; 1: grey alone")
    parser.add_argument("--key", default="model", help="where the model is configured, e.g. models[2], for messages")
    parser.add_argument("--seed", type=int, required=True, help="training seed (one of the config's seeds)")
    add_defense_arguments(parser)
    parser.add_argument("--settings", required=True,
                        help="the config's training section as JSON; what it leaves out comes from the schema")
    parser.add_argument("--weights", type=Path, required=True, help="best epoch's weights (.safetensors)")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch metrics and run ids (.json)")
    parser.add_argument("--resume-state", type=Path, required=True,
                        help="last epoch's full state; kept while training so a killed job resumes")


def run(args) -> None:
    from advseg import settings as settings_mod
    from advseg.checkpoints import save_weights
    from advseg.datasets import open_fold
    from advseg.defenses.defended import training_batch_maker
    from advseg.devices import claim_device, set_threads
    from advseg.jobs import write_json
    from advseg.models import build_model, count_parameters, model_name
    from advseg.tracking import Tracking, job_run, mark_killed
    from advseg.training import ResumeFile, TrainingSettings, resume_fingerprint, set_seed, train_model

    training = settings_mod.from_mapping(TrainingSettings, args.settings, "training", seed=args.seed)
    defense = {"defense": args.defense, "settings": defense_settings(args)}
    make_inputs = training_batch_maker(args.defense, defense["settings"])  # checked before any work
    tracking = Tracking.load(args.tracking)
    data = open_fold(args.data, args.fold)  # checks every file it will read before any work
    set_threads(args.threads)
    set_seed(training.seed)
    model = build_model(args.arch, args.encoder, classes=len(data.class_names), in_channels=args.in_channels,
                        encoder_weights=args.encoder_weights, key=args.key)
    params = count_parameters(model)
    name = args.name or model_name(args.arch, args.encoder)
    resume = ResumeFile.open(args.resume_state, resume_fingerprint(training, data, args.arch, args.encoder,
                                                                    defense if make_inputs else None))
    # a resumed job goes on logging into the run of the job that was killed
    run_id_file = args.resume_state.with_name(args.resume_state.name + ".mlflow_run_id")
    resuming = resume.state is not None and run_id_file.exists()
    if run_id_file.exists() and not resuming:  # starting over: the killed job's run must not stay RUNNING
        mark_killed(tracking, run_id_file.read_text().strip())
    tags = {"stage": "train", "arch": args.arch, "encoder": args.encoder, "model": name,
            "fold": str(args.fold), "seed": str(training.seed), "defense": args.defense,
            "twin": args.twin or name}
    sizes = data.sizes()
    started = time.perf_counter()
    with claim_device() as device, \
            job_run(tracking, name, tags, run_id=run_id_file.read_text().strip() if resuming else None) as run:
        run_id_file.parent.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run.run_id)
        run.set_tags({"device": str(device)})
        run.log_params({**settings_mod.as_dict(training), "arch": args.arch, "encoder": args.encoder,
                        "encoder_weights": args.encoder_weights, "in_channels": args.in_channels,
                        "params": params, "dataset": str(args.data), "image_size": data.image_size,
                        "fold": args.fold, "data_fingerprint": data.fingerprint,
                        "n_train": sizes["train"], "n_inner_val": sizes["inner_val"], "n_val": sizes["val"],
                        "defense": args.defense,
                        **{f"defense.{key}": value for key, value in defense["settings"].items()}})

        def on_epoch(record: dict) -> None:
            run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

        result = train_model(model, data, training, device, resume=resume, on_epoch=on_epoch,
                             make_inputs=make_inputs)
        logged = run.logged_steps("inner_val_dice")
        for record in result.history:  # a kill between saving an epoch and logging it
            if record["epoch"] not in logged:
                on_epoch(record)
        run.log_metrics({"best_inner_val_dice": result.best_inner_val_dice, "best_epoch": result.best_epoch})
        history = {"model": name, "arch": args.arch, "encoder": args.encoder, "params": params,
                   "fold": args.fold, "seed": training.seed, "data_fingerprint": data.fingerprint,
                   "sizes": sizes, "settings": settings_mod.as_dict(training),
                   "defense": args.defense, "defense_settings": defense["settings"],
                   "twin": args.twin or name, "best_epoch": result.best_epoch,
                   "best_inner_val_dice": result.best_inner_val_dice, "epochs": result.history,
                   "seconds": time.perf_counter() - started, "device": str(device),
                   "mlflow_run_id": run.run_id}
        save_weights(args.weights, model, args.arch, args.encoder, data.class_names,
                     extra={"training": history["settings"], "best_epoch": result.best_epoch, "fold": args.fold})
        write_json(args.history, history)
        run.log_artifact(args.history)
    args.resume_state.unlink(missing_ok=True)
    run_id_file.unlink(missing_ok=True)
    log.info("%s fold %d seed %d: best inner val dice %.4f at epoch %d; %s", name, args.fold, training.seed,
             result.best_inner_val_dice, result.best_epoch, args.weights)
