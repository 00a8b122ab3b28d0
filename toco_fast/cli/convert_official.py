"""``python -m toco_fast.convert_official IN.pth OUT.pt``: one of our checkpoints from an official ToCo ``.pth``.

Command line::

    python -m toco_fast.convert_official model_iter_20000.pth runs/official_voc/checkpoints/iter_0020000.pt \\
        [--backbone deit_base_patch16_224] [--aux-layer -3] [--config voc_vit_b] [--set data.root=...]

The official file's keys are mapped as ``toco_fast.model.official`` describes (DDP ``module.`` prefix, old-style
weight norm); a key that maps nowhere other than the known unused ImageNet head, or a model tensor the file lacks,
fails the conversion with the keys listed (exit status 2). The output holds ``model``, ``config`` (the preset with
the sizes read off the tensors), ``iteration`` (from the file name, e.g. ``model_iter_20000.pth``, else 0) and
``converted_from``; ``--checkpoint`` of evaluate / infer / diagnose also takes the official file directly.
"""
import argparse
import os
import sys
from typing import Optional, Sequence

from toco_fast.cli.common import INPUT_ERRORS, check_out_file, report_input_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toco_fast.convert_official",
                                     description="Convert an official ToCo .pth into a toco_fast checkpoint.")
    parser.add_argument("source", metavar="IN.pth", help="official ToCo checkpoint (model.state_dict())")
    parser.add_argument("target", metavar="OUT.pt", help="toco_fast checkpoint to write")
    parser.add_argument("--backbone", type=_backbone_arg,
                        help="the encoder: a timm name, or a YAML mapping of ViT fields such as '{embed_dim: 32, "
                        "depth: 3, num_heads: 2, patch_size: 16, img_size: 64}' (default: read off the tensors)")
    parser.add_argument("--aux-layer", type=int, default=-3, help="auxiliary block (official -3)")
    parser.add_argument("--config", help="preset or YAML the config starts from (default: coco_vit_b for 81 "
                        "classes, else voc_vit_b)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.root=/data/VOC2012")
    return parser


def _backbone_arg(text: str):
    """``--backbone``: a timm name, or a YAML mapping (``{...}``) of ViT config fields."""
    if not text.lstrip().startswith("{"):
        return text
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not a YAML mapping: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping of ViT fields, got {text!r}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns 0, or 2 for bad input (one ``error:`` line on stderr)."""
    from toco_fast.config import to_dict
    from toco_fast.io.checkpoint import save_checkpoint
    from toco_fast.model.factory import unwrap_official_state, official_model, read_checkpoint_file
    from toco_fast.model.official import is_official_state_dict, iteration_from_name

    args = build_parser().parse_args(argv)
    try:
        if not os.path.isfile(args.source):
            raise FileNotFoundError(f"IN.pth: {args.source}: no such file")
        check_out_file(args.target, "OUT.pt")
        file_path, content = read_checkpoint_file(args.source)
        state = unwrap_official_state(content)
        if not is_official_state_dict(state):
            raise ValueError(f"{file_path}: not an official ToCo state dict (expected classifier.weight and "
                             "encoder.blocks.* tensors, optionally under module.)")
        model, config, report = official_model(state, file_path, preset=args.config, backbone=args.backbone,
                                               aux_layer=args.aux_layer, overrides=args.overrides)
        iteration = iteration_from_name(file_path)
        save_checkpoint(args.target, {"model": model.state_dict(), "config": to_dict(config), "iteration": iteration,
                                      "converted_from": os.path.abspath(file_path)})
    except INPUT_ERRORS as exc:
        return report_input_error(exc)
    backbone = config.model.backbone if isinstance(config.model.backbone, str) else dict(config.model.backbone)
    print(f"wrote {args.target}: {config.model.num_classes} classes, backbone {backbone}, iteration {iteration}; "
          f"{report.summary()}", file=sys.stdout)
    return 0
