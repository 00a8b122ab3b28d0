"""Files that must survive a crash: the atomic writer, checkpoints (find, load, save, prune), RNG capture."""
