"""Distribution: the plan (``plan``: none / DDP / FSDP2, backend, one-line errors), process group and device per rank,
collectives, the one place that wraps a model (``wrap.parallelize``: ``ddp.PhasedDDP`` or ``fsdp`` units; and the
one ``unwrap``), and model / optimizer state that does not depend on the distribution (``state``)."""
