"""`lunglens train MODEL`: train the light SqueezeNet, DeCoVNet, the lung U-Net, DCN or COVID-CT-Mask-Net's
segmentation model on a labelled folder.

The options and their defaults come from `inference.core.choices`, so `--help` imports no torch; the
recipes in `inference.training.recipes` are imported only to train.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.cli.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, fail
from app.cli.progress_bar import ProgressBar
from inference.core.choices import (
    DCN_TRAIN,
    DECOVNET_TRAIN,
    LIGHT_SQUEEZENET_TRAIN,
    LUNG_UNET_TRAIN,
    MASK_NET_TRAIN,
    NORMALIZATIONS,
    SEMISEG_JPEG_QUALITY,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model on a labelled folder",
                              description="Train a model on a labelled folder; writes weights, a model card with "
                                          "validation metrics, and the validation ROC curve. `lunglens train MODEL "
                                          "--help` shows MODEL's options and the folder layout it reads.")
    models = p.add_subparsers(dest="model", metavar="MODEL", required=True, help="model to train")
    _register_light_squeezenet(models)
    _register_decovnet(models)
    _register_lung_unet(models)
    _register_dcn(models)
    _register_mask_net(models)


def run(args: argparse.Namespace) -> int:
    """Train the model `args.model` names."""
    return {"light-squeezenet": run_light_squeezenet, "decovnet": run_decovnet,
            "lung-unet": run_lung_unet, "dcn": run_dcn, "covid-ct-mask-net": run_mask_net}[args.model](args)


# -- light-squeezenet ---------------------------------------------------------------------------


def _register_light_squeezenet(models: argparse._SubParsersAction) -> None:
    d = LIGHT_SQUEEZENET_TRAIN
    p = models.add_parser("light-squeezenet", help="the light SqueezeNet slice model (COVID-CT layout)",
                          description="Train the light SqueezeNet slice model on a folder laid out like COVID-CT "
                                      "(CT_<CLASS>/ image folders and Data-split/<CLASS>/<split>CT_<CLASS>.txt "
                                      "lists); writes weights, a model card with validation metrics, and the "
                                      "validation ROC curve.")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--normalize", choices=NORMALIZATIONS, default=d["normalize"],
                   help="input normalization: per-image (zero mean, unit sd; for images of mixed windowing, the "
                        "shipped model's) or fixed (one affine map: CT slices in a fixed window; heat maps sit "
                        "on lesions more, measured on phantoms)")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate (SGD)")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (e.g. the shipped ones) instead of "
                   "He initialisation")
    p.add_argument("--teacher", metavar="WEIGHTS", help="learning without forgetting: the dataset's images also "
                   "learn these weights' softened outputs (e.g. a model trained on the dataset alone, while real "
                   "CT slices are added)")
    p.add_argument("--distill", type=float, default=1.0, metavar="W",
                   help="weight of the --teacher term in the loss (default 1)")
    real = p.add_argument_group(
        "real CT volumes", "Add every lung slice of real CT volumes (DICOM folders or volume files), cropped and "
        "windowed as screening sees them; slabs 40 mm thick are held out as a second validation set, and the "
        "epoch kept is the best on the mean of both validation AUCs.")
    real.add_argument("--real-covid", nargs="+", default=[], metavar="CT",
                      help="COVID-19 volumes: slices labelled infected are COVID, the rest NonCOVID")
    real.add_argument("--real-pneumonia", nargs="+", default=[], metavar="CT",
                      help="other pneumonia: slices labelled infected are left out, the rest NonCOVID")
    real.add_argument("--real-negative", nargs="+", default=[], metavar="CT", help="volumes with no infection")
    real.add_argument("--slice-labels", metavar="JSON", help="per-case slice labels keyed by the CT's folder or "
                      "file name (COVID-CT-MD's slice-labels.json); needed with --real-covid/--real-pneumonia")
    p.set_defaults(func=run)


def run_light_squeezenet(args: argparse.Namespace) -> int:
    from inference.training.recipes.light_squeezenet import TrainConfig, train

    if not os.path.isdir(args.data):
        return fail(f"{args.data}: no such folder")
    if (args.real_covid or args.real_pneumonia) and not args.slice_labels:
        return fail("--real-covid and --real-pneumonia need --slice-labels", EXIT_USAGE)
    real, sources = None, []
    if args.real_covid or args.real_pneumonia or args.real_negative:
        from app.services.real_slices import collect_real_slices
        from inference.models.light_squeezenet import TRANSFORMS

        try:
            real, sources = collect_real_slices(
                {"covid": args.real_covid, "pneumonia": args.real_pneumonia, "negative": args.real_negative},
                args.slice_labels, TRANSFORMS.hu_window, log=print)
        except ValueError as exc:
            return fail(str(exc))
    bar = ProgressBar("training")
    try:
        result = train(args.data, args.out, TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr,
                                                        batch_size=args.batch_size, normalize=args.normalize,
                                                        init=args.init, teacher=args.teacher,
                                                        distill_weight=args.distill if args.teacher else 0.0),
                       model_name=args.model, progress=bar, log=lambda m: (bar.close(), print(m)),
                       real=real, real_sources=sources)
    except FileNotFoundError as exc:
        return fail(str(exc))
    bar.close()
    print(f"wrote {result.weights} and {result.card}")
    return EXIT_OK


# -- decovnet -----------------------------------------------------------------------------------


def _register_decovnet(models: argparse._SubParsersAction) -> None:
    d = DECOVNET_TRAIN
    p = models.add_parser("decovnet", help="DeCoVNet on a folder of labelled CT volumes",
                          description="Train DeCoVNet on a folder of labelled CT volumes (see "
                                      "inference/training/datasets/volumes.py for the layout)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (weights, card, ROC plot)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"default {d['epochs']} (the paper)")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"Adam learning rate (constant); default {d['lr']:g}")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--size", type=int, nargs=2, default=list(d["size"]), metavar=("ROWS", "COLS"),
                   help="in-plane input size; default 224 336 (the paper)")
    p.add_argument("--z-spacing", type=float, default=d["z_spacing_mm"], metavar="MM",
                   help=f"slice spacing after resampling; default {d['z_spacing_mm']:g}")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"],
                   help="validation share when the folder has no splits.json or split column")
    p.add_argument("--no-augment", action="store_true", help="train without the paper's augmentation")
    p.add_argument("--lungs-only", type=int, metavar="K", help="zero the CT channel farther than K network voxels "
                   "from the lung mask (a deviation for CPU training; the card records it and screening applies it)")
    p.add_argument("--warmup-steps", type=int, default=0, metavar="N", help="linear learning-rate warm-up")
    p.add_argument("--clip-norm", type=float, default=0.0, metavar="X", help="clip the gradient norm (0: no)")
    p.add_argument("--transplant", type=float, default=0.0, metavar="P",
                   help="make a negative training case COVID with probability P by pasting lesions of the training "
                        "COVID cases that have a lesion_mask.nii.gz into its lungs (default 0: off)")
    p.add_argument("--transplant-parts", type=int, nargs=2, default=[1, 11], metavar=("MIN", "MAX"),
                   help="lesions per transplant (default 1 11)")
    p.add_argument("--steps-per-epoch", type=int, default=0, metavar="N",
                   help="training steps between validations (default 0: one pass over the cases)")
    p.add_argument("--no-balance", action="store_true",
                   help="do not oversample the smaller class (with --transplant, negatives turn COVID at random)")
    p.add_argument("--device", default=d["device"], help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=d["threads"], help="CPU threads (0: torch's default)")
    p.add_argument("--name", default=d["model_name"], help="model name used for the output files")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (same settings)")
    p.add_argument("--time-limit", type=float, default=d["time_limit_min"], metavar="MIN",
                   help="stop after the epoch that passes MIN minutes and write the best weights so far")
    p.set_defaults(func=run)


def run_decovnet(args: argparse.Namespace) -> int:
    """0 on success, 1 when the data folder does not follow the layout (or a checkpoint does not fit)."""
    from inference.training.recipes.decovnet import VolumeTrainConfig, train

    cfg = VolumeTrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, size=tuple(args.size),
                            z_spacing_mm=args.z_spacing, val_fraction=args.val_fraction,
                            augment=not args.no_augment, device=args.device, threads=args.threads,
                            model_name=args.name, resume=args.resume, time_limit_min=args.time_limit,
                            lungs_only=args.lungs_only, warmup_steps=args.warmup_steps, clip_norm=args.clip_norm,
                            transplant=args.transplant, transplant_parts=tuple(args.transplant_parts),
                            steps_per_epoch=args.steps_per_epoch, balance_classes=not args.no_balance)
    return _train_on_volumes(train, args, cfg)


# -- lung-unet ----------------------------------------------------------------------------------


def _register_lung_unet(models: argparse._SubParsersAction) -> None:
    d = LUNG_UNET_TRAIN
    p = models.add_parser("lung-unet", help="the 2D lung U-Net on pseudo-labels of the threshold method",
                          description="Train the 2D lung U-Net on pseudo-labels of the threshold method. "
                                      "DIR: case folders (<case>/ct.nii.gz), a ct.nii.gz folder, a volume "
                                      "file, or a DICOM series folder.")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--slices-per-epoch", type=int, default=d["slices_per_epoch"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--limit", type=int, default=d["limit"], help="at most N volumes per folder of cases (seeded)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--threads", type=int, default=d["threads"], help="torch CPU threads (0: default)")
    p.add_argument("--time-limit", type=float, default=d["time_limit_min"], metavar="MIN",
                   help="stop after this many minutes")
    p.set_defaults(func=run)


def run_lung_unet(args: argparse.Namespace) -> int:
    """0 on success, 1 when the data cannot be used."""
    from inference.training.recipes.lung_unet import TrainConfig, train

    cfg = TrainConfig(epochs=args.epochs, slices_per_epoch=args.slices_per_epoch, batch_size=args.batch_size,
                      lr=args.lr, limit=args.limit, seed=args.seed, threads=args.threads,
                      time_limit_min=args.time_limit)
    return _train_on_volumes(train, args, cfg)


# -- dcn ----------------------------------------------------------------------------------------


def _register_dcn(models: argparse._SubParsersAction) -> None:
    d = DCN_TRAIN
    p = models.add_parser("dcn", help="DCN lesion segmenter + classifier on radiologists' masks (COVID-SemiSeg)",
                          description="Train DCN (dual-branch combination network) on slices with lesion masks "
                                      "in the COVID-SemiSeg layout: DIR/Imgs/<stem>.jpg and "
                                      "DIR/GT-multiclass/<stem>.png (0 background, 1 GGO, 2 consolidation; "
                                      "DIR/GT/ binary masks when that is missing). One fold is held out for "
                                      "validation; --cv trains every fold and reports mean +- sd Dice.")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate (x0.95 per epoch)")
    fold = p.add_mutually_exclusive_group()
    fold.add_argument("--fold", type=int, default=d["fold"], metavar="K", help="the held-out fold (0-based)")
    fold.add_argument("--cv", action="store_true",
                      help="cross-validate: train every fold; the weights in --out are fold 0's (see --final)")
    p.add_argument("--final", action="store_true",
                   help="with --cv: then train on every slice for the folds' median best epoch count and ship "
                        "that model (the cross-validated Dice is its estimate)")
    p.add_argument("--folds", type=int, default=d["folds"])
    p.add_argument("--size", type=int, default=d["size"], help="input side, a multiple of 16 (the paper: 512)")
    p.add_argument("--base", type=int, default=d["base"], help="network width (the paper: 64)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--threads", type=int, default=d["threads"], help="torch CPU threads (0: default)")
    p.add_argument("--time-limit", type=float, default=d["time_limit_min"], metavar="MIN",
                   help="stop after the epoch that passes MIN minutes (with --cv: the whole run's)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/dcn.checkpoint.pt (with --cv: each fold's; same settings)")
    p.add_argument("--negatives", action="append", default=[], metavar="PATH",
                   help="a CT without COVID-19 (DICOM folder or volume file; repeatable): its lung-cropped slices "
                        "train the classification branch as negatives")
    p.add_argument("--negatives-per-positive", type=float, default=d["negatives_per_positive"], metavar="R",
                   help="negatives drawn per epoch, relative to the positives (the paper's under-sampling)")
    p.add_argument("--negatives-jpeg", type=int, default=SEMISEG_JPEG_QUALITY, metavar="Q",
                   help="store each negative slice as 8-bit JPEG of quality Q and decode it, as the annotated "
                        f"images were exported (default {SEMISEG_JPEG_QUALITY}; 0: off)")
    p.add_argument("--self-train", metavar="DIR",
                   help="self-training: the train split of a COVID-CT-style folder (CT_COVID/, CT_NonCOVID/, "
                        "Data-split/) trains with --teacher's lesion labels (pseudo-labels) and its own COVID flag")
    p.add_argument("--teacher", metavar="PATH",
                   help="with --self-train: DCN weights of the same width (with --cv: an earlier --cv output "
                        "folder; fold K learns from PATH/foldK/dcn.pt, --final from PATH/dcn.pt)")
    p.add_argument("--pseudo-per-positive", type=float, default=d["pseudo_per_positive"], metavar="R",
                   help="with --self-train: pseudo-labelled slices drawn per epoch, relative to the positives")
    p.add_argument("--last-epoch", action="store_true",
                   help="keep each fold's last epoch instead of the one best on its held-out slices: a "
                        "cross-validated Dice free of that selection; --final then trains --epochs epochs")
    p.add_argument("--ema-decay", type=float, default=d["ema_decay"], metavar="D",
                   help="score and ship a moving average of the weights, decay D per step (0: off)")
    p.set_defaults(func=run)


def run_dcn(args: argparse.Namespace) -> int:
    """0 on success, 1 when the data folder does not follow the layout."""
    from inference.training.datasets.slices import read_grey_split
    from inference.training.datasets.volumes import DatasetError
    from inference.training.recipes.dcn import DCNTrainConfig, SelfTraining, cross_validate, train
    from inference.transforms.images import ImageError

    cfg = DCNTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, size=args.size,
                         base=args.base, folds=args.folds, fold=args.fold, seed=args.seed, threads=args.threads,
                         time_limit_min=args.time_limit, resume=args.resume,
                         negatives_per_positive=args.negatives_per_positive, ema_decay=args.ema_decay,
                         pseudo_per_positive=args.pseudo_per_positive, select_best=not args.last_epoch)
    if not 0.0 <= args.ema_decay < 1.0:
        return fail(f"--ema-decay must be in [0, 1), got {args.ema_decay}", EXIT_USAGE)
    if not os.path.isdir(args.data):
        return fail(f"{args.data}: no such folder")
    if args.final and not args.cv:
        return fail("--final needs --cv (the folds choose its epoch count)", EXIT_USAGE)
    if not 0 <= args.negatives_jpeg <= 100:
        return fail(f"--negatives-jpeg must be 0 (off) or a JPEG quality 1-100, got {args.negatives_jpeg}", EXIT_USAGE)
    if bool(args.self_train) != bool(args.teacher):
        return fail("--self-train and --teacher go together", EXIT_USAGE)
    extra, sources = negative_slices(args.negatives, args.negatives_jpeg or None)
    try:
        st = None
        if args.self_train:
            images = read_grey_split(args.self_train, "train")
            st = SelfTraining(images, Path(args.teacher), f"{os.path.basename(os.path.normpath(args.self_train))} "
                                                          f"train split: {len(images)} images")
        if args.cv:
            result = cross_validate(args.data, args.out, cfg, extra=extra, extra_source="; ".join(sources),
                                    final=args.final, self_training=st, log=print)
        else:
            result = train(args.data, args.out, cfg, extra=extra, extra_source="; ".join(sources),
                           self_training=st, log=print)
    except (DatasetError, ValueError, FileNotFoundError, ImageError) as exc:
        return fail(str(exc))
    print(f"wrote {result.weights} and {result.card}")
    return EXIT_OK


def negative_slices(paths: list[str], jpeg_quality: int | None = None) -> tuple[list, list[str]]:
    """The lung-cropped slices of each CT in `paths` as negatives (`jpeg_quality`: round-tripped through JPEG),
    and a line per CT naming it and its count.

    A CT that cannot be read raises the loader's error (reported by `app.cli.main` with the path)."""
    from app.services.volume_dataset import read_ct
    from inference.lungs.select import segment_lungs_by
    from inference.training.datasets.ct_crops import lung_crops

    extra, sources = [], []
    for path in paths:
        hu, spacing = read_ct(path)
        crops = lung_crops(hu, segment_lungs_by("threshold", hu, spacing).lungs, is_covid=False,
                           jpeg_quality=jpeg_quality)
        print(f"{path}: {len(crops)} negative slices")
        extra += crops
        jpeg = f", JPEG quality {jpeg_quality}" if jpeg_quality else ""
        sources.append(f"{os.path.basename(os.path.normpath(path))}: {len(crops)} lung-cropped slices "
                       f"(NonCOVID{jpeg})")
    return extra, sources


# -- covid-ct-mask-net --------------------------------------------------------------------------


def _register_mask_net(models: argparse._SubParsersAction) -> None:
    d = MASK_NET_TRAIN
    p = models.add_parser("covid-ct-mask-net",
                          help="COVID-CT-Mask-Net's segmentation model (lesion instances) on radiologists' masks",
                          description="Train the lightweight Mask R-CNN of COVID-CT-Mask-Net on slices with lesion "
                                      "masks in the COVID-SemiSeg layout (DIR/Imgs/<stem>.jpg, DIR/GT-multiclass/ "
                                      "or DIR/GT/<stem>.png); each 8-connected lesion region of at least 100 px is "
                                      "an instance. Cross-validates (--folds K: mask mAP@[.5:.95], AP50, Dice per "
                                      "fold), then trains on every slice: OUT/covid-ct-mask-net-seg.pt (float16) "
                                      "and its card.")
    p.add_argument("--data", metavar="DIR", help="slices with lesion masks (COVID-SemiSeg layout)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="epochs, fixed in advance")
    p.add_argument("--lr", type=float, default=d["lr"], help="AdamW learning rate (x0.1 for the last quarter)")
    p.add_argument("--folds", type=int, default=d["folds"], help="cross-validation folds (1: none)")
    p.add_argument("--short-side", type=int, default=d["short_side"], help="input short side (the paper: 512)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--threads", type=int, default=d["threads"], help="torch CPU threads (0: default)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    clf = p.add_argument_group(
        "the three-class classifier", "With --classifier: train the module S on a trained segmentation model "
        "(--detector) from real CT volumes (DICOM folders or volume files): slices labelled infected are COVID-19 "
        "(--real-covid) or common pneumonia (--real-pneumonia), every lung slice of --real-negative is control; "
        "every 5th slab 40 mm thick is held out. Writes OUT/covid-ct-mask-net.pt and its card; --data is not used.")
    clf.add_argument("--classifier", action="store_true", help="train the classifier instead of the segmentation")
    clf.add_argument("--detector", metavar="WEIGHTS", help="the trained segmentation model (covid-ct-mask-net-seg.pt)")
    clf.add_argument("--real-covid", nargs="+", default=[], metavar="CT")
    clf.add_argument("--real-pneumonia", nargs="+", default=[], metavar="CT")
    clf.add_argument("--real-negative", nargs="+", default=[], metavar="CT")
    clf.add_argument("--slice-labels", metavar="JSON", help="COVID-CT-MD's slice-labels.json (keyed by case name)")
    clf.add_argument("--classifier-epochs", type=int, default=60, metavar="N")
    p.set_defaults(func=run)


def run_mask_net(args: argparse.Namespace) -> int:
    """0 on success, 1 when the data folder does not follow the layout."""
    from inference.training.datasets.volumes import DatasetError
    from inference.training.recipes.mask_net import MODEL_NAME, MaskNetTrainConfig, cross_validate

    if args.classifier:
        return _run_mask_net_classifier(args)
    if not args.data:
        return fail("--data DIR is needed (the slices with lesion masks)", EXIT_USAGE)
    if args.epochs < 1 or args.folds < 1 or args.short_side < 32 or args.lr <= 0:
        return fail("--epochs and --folds must be >= 1, --short-side >= 32 and --lr > 0", EXIT_USAGE)
    cfg = MaskNetTrainConfig(epochs=args.epochs, lr=args.lr, folds=args.folds, short_side=args.short_side,
                             seed=args.seed, threads=args.threads, device=args.device)
    try:
        card = cross_validate(args.data, args.out, cfg, log=print)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cv = card["cross_validation"]["summary"]  # type: ignore[index]
    if cv:
        print(f"cross-validated: mask mAP {cv['map']['mean']:.3f} +- {cv['map']['sd']:.3f}, "
              f"Dice {cv['dice']['mean']:.3f} +- {cv['dice']['sd']:.3f}")
    print(f"wrote {Path(args.out) / (MODEL_NAME + '.pt')} and its card")
    return EXIT_OK


def _run_mask_net_classifier(args: argparse.Namespace) -> int:
    from app.services.real_slices import case_name, collect_real_slices
    from inference.models._api import WeightsError, load_weights, sha256_of
    from inference.models.covid_ct_mask_net import CovidCTMaskNet, lesion_segmentation_model
    from inference.models.dcn import EXPORT_WINDOW_HU
    from inference.training.recipes.mask_net_classifier import MaskNetClassifierConfig, train_classifier
    from inference.transforms.common import HUWindow

    if not args.detector:
        return fail("--classifier needs --detector WEIGHTS (a trained covid-ct-mask-net-seg.pt)", EXIT_USAGE)
    if not (args.real_covid and args.real_pneumonia and args.real_negative):
        return fail("--classifier needs volumes of all three classes: --real-covid, --real-pneumonia and "
                    "--real-negative", EXIT_USAGE)
    if not args.slice_labels:
        return fail("--real-covid and --real-pneumonia need --slice-labels", EXIT_USAGE)
    detector = lesion_segmentation_model(short_side=args.short_side)
    try:
        detector.load_state_dict(load_weights(args.detector, sha256_of(Path(args.detector))))
    except (WeightsError, OSError, RuntimeError) as exc:
        return fail(f"{args.detector}: not a covid-ct-mask-net-seg weights file: {exc}")
    window = HUWindow(*EXPORT_WINDOW_HU)
    try:  # "covid" kind keeps every lung slice with its infected flag; the recipe turns flags into classes
        covid, _ = collect_real_slices({"covid": args.real_covid}, args.slice_labels, window, lesion_shares=False)
        pneumonia, _ = collect_real_slices({"covid": args.real_pneumonia}, args.slice_labels, window,
                                           lesion_shares=False)
        control, _ = collect_real_slices({"negative": args.real_negative}, None, window, lesion_shares=False)
        sources = ([f"{case_name(p)}: COVID-19" for p in args.real_covid]
                   + [f"{case_name(p)}: common pneumonia" for p in args.real_pneumonia]
                   + [f"{case_name(p)}: control" for p in args.real_negative])
        train_classifier(CovidCTMaskNet(detector=detector), covid, pneumonia, control, args.out,
                         MaskNetClassifierConfig(epochs=args.classifier_epochs, seed=args.seed, device=args.device),
                         sources=sources, log=print)
    except ValueError as exc:
        return fail(str(exc))
    return EXIT_OK


def _train_on_volumes(train: Callable[..., Any], args: argparse.Namespace, cfg: object) -> int:
    """Run a recipe that reads CT volumes (case folders, volume files or DICOM series); a folder that does not
    follow the layout is exit code 1."""
    from app.services.volume_dataset import read_ct
    from inference.training.datasets.volumes import DatasetError

    try:  # read_ct reads DICOM series folders too; its LoadError is reported by `app.cli.main`
        result = train(args.data, args.out, cfg, reader=read_ct, log=print)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {result.weights} and {result.card}")
    return EXIT_OK
