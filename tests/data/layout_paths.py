"""Paths inside the ``small_set`` fixture (a generated set in the VOC layout, 4 classes) shared by the data tests."""
import os

from toco_fast.data.layouts.synthetic import synthetic_class_names
from toco_fast.data.layouts.voc import VOCSource

NUM_CLASSES = 4  # classes of the small_set fixture


def small_source(root, split="train") -> VOCSource:
    return VOCSource(root, split, class_names=synthetic_class_names(NUM_CLASSES))


def images_path(root, name):
    return os.path.join(root, "JPEGImages", f"{name}.png")


def masks_path(root, name):
    return os.path.join(root, "SegmentationClassAug", f"{name}.png")


def lists_path(root, name=""):
    return os.path.join(root, "ImageSets", "Segmentation", name)
