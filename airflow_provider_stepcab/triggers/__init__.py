"""Triggers of the stepcab provider (run in the triggerer's event loop).

* :class:`~.slurm.SlurmJobTrigger` — wait for Slurm jobs, one cluster query per interval for all of them.
* :class:`~.status_file.StatusFileTrigger` — wait for a status/result file (local or over SFTP).
* :mod:`.events` — the typed event payloads.
"""
