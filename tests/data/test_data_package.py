"""The package as a whole: lazy exports, one-way imports between its modules, torch-free commands."""
import ast
import os
import subprocess
import sys

import pytest

import toco_fast.data as data

PACKAGE_DIR = os.path.dirname(data.__file__)

# Every public name other code imports as ``from toco_fast.data import NAME``.
PUBLIC_NAMES = {
    "check_dataset", "COCO_CLASSES", "VOC_CLASSES", "voc_palette", "COCOSource", "EvalDataset", "TrainDataset",
    "DataError", "KINDS", "open_source", "FolderSource", "ResumableSampler", "WorkerInit", "batches_per_epoch",
    "build_train_loader", "build_val_loader", "iterate_batches", "set_position", "ImageSource",
    "generate_synthetic", "open_synthetic", "IMAGENET_MEAN", "IMAGENET_STD", "ToCoViews", "denormalize",
    "denormalize_uint8", "normalize", "to_uint8_image", "sample_seed", "VOCSource", "TrainBatch", "ValData",
    "check_splits", "open_split", "training_loader", "validation_data",
}

# A module may import from its own layer (without cycles) or from a lower one, never from a higher one.
LAYERS = {
    "errors": 0, "classes": 0, "files": 0, "imagenet": 0, "pictures": 0,
    "layouts": 1,
    "views": 2, "datasets": 2, "batch": 2, "loader": 2,
    "pipeline": 3, "tools": 3,
    "synthetic": 4, "prepare_voc": 4, "prepare_coco": 4,
}

COMMANDS = {
    "synthetic": ["--out", "--num-train", "--num-val", "--num-classes", "--size", "--seed", "--boundary", "--force"],
    "prepare_voc": ["--root", "--lists-dir", "--num-classes", "--force"],
    "prepare_coco": ["--root", "--annotations-dir", "--mask-root", "--lists-dir", "--subsets", "--crowd", "--force"],
}


def test_public_names_resolve():
    assert PUBLIC_NAMES <= set(data.__all__), sorted(PUBLIC_NAMES - set(data.__all__))
    for name in data.__all__:
        assert getattr(data, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        data.no_such_name


def _data_imports():
    """module (dotted, relative to toco_fast.data) -> the toco_fast.data modules it imports."""
    graph = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for file in files:
            if not file.endswith(".py") or file == "__init__.py":
                continue
            path = os.path.join(folder, file)
            module = os.path.relpath(path, PACKAGE_DIR)[:-3].replace(os.sep, ".")
            package = module.split(".")[:-1]
            targets = set()
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    targets.add(".".join(base + [node.module] if node.module else base))
                elif node.module and node.module.startswith("toco_fast.data."):
                    targets.add(node.module[len("toco_fast.data."):])
            graph[module] = targets
    return graph


def test_imports_go_one_way_without_cycles():
    graph = _data_imports()
    assert {"layouts.voc", "tools.make_synthetic", "views", "datasets"} <= set(graph)
    for module, targets in graph.items():
        assert module.split(".")[0] in LAYERS, f"{module}: add it to LAYERS"
        for target in targets:
            assert LAYERS[target.split(".")[0]] <= LAYERS[module.split(".")[0]], f"{module} imports {target}"
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join(path + [module])
        state[module] = "open"
        for target in graph.get(module, ()):
            visit(target, path + [module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_do_not_import_torch(command):
    code = f"import sys, toco_fast.data.{command}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_lists_its_flags(command):
    result = subprocess.run([sys.executable, "-m", f"toco_fast.data.{command}", "--help"], capture_output=True,
                            text=True, check=True)
    assert f"usage: python -m toco_fast.data.{command}" in result.stdout
    for flag in COMMANDS[command]:
        assert flag in result.stdout, flag
