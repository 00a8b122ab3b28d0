"""Distribution: process group and device per rank, collectives, and the one place that wraps a model for
DDP / compilation (``wrap``)."""
