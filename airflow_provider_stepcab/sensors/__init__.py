"""Sensors of the stepcab provider (deferrable).

* :class:`~.slurm.SlurmJobSensor` — wait for a Slurm job submitted by something else.
* :class:`~.status_file.StatusFileSensor` — wait for a status/result file pair (the SemWES pattern).
"""
