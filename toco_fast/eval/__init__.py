"""Evaluation: confusion-matrix metrics, in-training validation, scoring of prediction folders."""
