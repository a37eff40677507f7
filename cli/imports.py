"""``sensorium import-checkpoint``: a state_dict trained elsewhere as an experiment's model."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import UsageError, activate, check_device, out
from pipeline.settings import load_settings


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    # cheap checks first (no torch yet): the file is there and readable, the device exists
    try:
        with open(args.file, "rb"):
            pass
    except OSError as err:
        raise UsageError(f"{args.file}: cannot read the file ({err.strerror or err})") from None
    settings = load_settings()
    device_name = check_device(args.device or settings.device)
    from pipeline.models.import_state import StateDictImportError, read_state_dict

    try:
        read_state_dict(args.file)  # a bad file is refused before the database is contacted
    except StateDictImportError as err:
        out(f"error: {err}")
        return 2
    activate(settings)
    from pipeline.training.seeding import resolve_device
    from usecases.checkpoints import import_checkpoint

    try:
        device = str(resolve_device(device_name))
        key, val_corr = import_checkpoint(args.file, args.experiment, args.scan, args.seed, device)
    except (StateDictImportError, LookupError, RuntimeError) as err:
        out(f"error: {err}")
        return 2
    out(
        f"imported {args.file.name} as experiment {args.experiment!r} seed {key['seed']} "
        f"on scan {args.scan}: "
        f"validation correlation {val_corr:.4f}; `sensorium populate --experiment {args.experiment}` "
        "predicts and scores it"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-checkpoint",
        help="store a state_dict trained elsewhere (e.g. the starter kit's) as an experiment's model",
    )
    p.add_argument("file", type=Path, help="a .pth state_dict (neuralpredictors 0.3.0 names)")
    p.add_argument("--experiment", required=True, help="experiment whose model the weights must fit")
    p.add_argument("--scan", required=True, metavar="DATA_KEY", help="the ingested scan the readout is for")
    p.add_argument("--seed", type=int, help="which member (default: the experiment's only one)")
    p.add_argument(
        "--device",
        help="device for the check on the validation tier: auto, cpu, cuda, cuda:N or mps "
        "(default: SENSORIUM_DEVICE)",
    )
    p.set_defaults(func=cmd_import_checkpoint)
