"""Hooks of the stepcab provider.

* :class:`~.slurm.SlurmHook` — a Slurm cluster over SSH (ssh/sftp providers' hooks composed).
"""
