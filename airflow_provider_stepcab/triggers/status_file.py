"""Deferred wait on a status/result file pair (the SemWES pattern), local or over SFTP.

Something else (a remote service, a detached job) writes a *status* file that changes as it
progresses, finally a *result* file, or an *error* marker when it fails. The trigger polls the
files, logs each new status, and fires one :class:`~.events.StatusFileEvent`:

* ``success`` when the result is complete: the ``done_marker`` file exists when one is given;
  else a ``.json`` result parses as JSON; else the result is non-empty and its size did not
  change between two polls;
* ``failed`` when the error marker exists (its content is the message);
* ``timeout`` after ``timeout`` seconds; ``error`` after ``ssh_patience`` seconds of SSH failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, AsyncIterator, Optional

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_stepcab.triggers.events import ERROR, FAILED, SUCCESS, TIMEOUT, StatusFileEvent


class _LocalFiles:
    async def read(self, path: str, limit: int) -> Optional[bytes]:
        def _read() -> Optional[bytes]:
            try:
                with open(path, "rb") as fh:
                    return fh.read(limit)
            except FileNotFoundError:
                return None
        return await asyncio.to_thread(_read)

    async def size(self, path: str) -> Optional[int]:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def close(self) -> None:
        pass


class _SftpFiles:
    def __init__(self, ssh_conn_id: str):
        self.ssh_conn_id, self.conn, self.sftp = ssh_conn_id, None, None

    async def _client(self) -> Any:
        if self.sftp is None:
            from airflow.providers.ssh.hooks.ssh import SSHHookAsync

            self.conn = await asyncio.wait_for(SSHHookAsync(ssh_conn_id=self.ssh_conn_id).get_conn(), 60)
            self.sftp = await self.conn.start_sftp_client()
        return self.sftp

    async def read(self, path: str, limit: int) -> Optional[bytes]:
        import asyncssh

        sftp = await self._client()
        try:
            async with sftp.open(path, "rb") as fh:
                return await fh.read(limit)
        except asyncssh.SFTPNoSuchFile:
            return None

    async def size(self, path: str) -> Optional[int]:
        import asyncssh

        sftp = await self._client()
        try:
            return (await sftp.stat(path)).size
        except asyncssh.SFTPNoSuchFile:
            return None

    def close(self) -> None:
        for obj in (self.sftp, self.conn):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001
                pass
        self.sftp = self.conn = None


def decode_result(data: bytes, path: str) -> Any:
    """The result's content: parsed JSON for ``.json`` files (or JSON-looking text), else text."""
    text = data.decode("utf-8", "replace")
    if path.endswith(".json") or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            if path.endswith(".json"):
                raise
    return text


class StatusFileTrigger(BaseTrigger):
    """Poll a status file, a result file and an error marker.

    :param result_path: the file holding the result (its presence + completeness means success).
    :param status_path: a progress file, logged whenever its content changes.
    :param error_path: a marker whose existence means failure.
    :param done_marker: a file whose existence means the result is complete.
    :param ssh_conn_id: read the files over SFTP through this SSH connection (``None``: local files).
    :param poll_interval: seconds between polls.
    :param timeout: seconds before giving up (``None``: never).
    :param started_at: epoch seconds the wait started (kept across triggerer restarts).
    :param max_bytes: the most bytes read of each file.
    :param ssh_patience: seconds of SSH failures tolerated.
    """

    def __init__(self, *, result_path: str, status_path: Optional[str] = None, error_path: Optional[str] = None,
                 done_marker: Optional[str] = None, ssh_conn_id: Optional[str] = None, poll_interval: float = 5.0,
                 timeout: Optional[float] = None, started_at: Optional[float] = None, max_bytes: int = 1 << 20,
                 ssh_patience: float = 3600.0) -> None:
        super().__init__()
        self.result_path, self.status_path, self.error_path = result_path, status_path, error_path
        self.done_marker, self.ssh_conn_id, self.poll_interval = done_marker, ssh_conn_id, float(poll_interval)
        self.timeout, self.started_at = timeout, started_at or time.time()
        self.max_bytes, self.ssh_patience = int(max_bytes), float(ssh_patience)

    def serialize(self) -> tuple:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "result_path": self.result_path, "status_path": self.status_path, "error_path": self.error_path,
            "done_marker": self.done_marker, "ssh_conn_id": self.ssh_conn_id, "poll_interval": self.poll_interval,
            "timeout": self.timeout, "started_at": self.started_at, "max_bytes": self.max_bytes,
            "ssh_patience": self.ssh_patience})

    def _event(self, status: str, message: str, last: Optional[str], result: Any = None) -> TriggerEvent:
        return TriggerEvent(StatusFileEvent(status=status, result_path=self.result_path, result=result,
                                            last_status=last, message=message).to_dict())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        files = _SftpFiles(self.ssh_conn_id) if self.ssh_conn_id else _LocalFiles()
        last_status: Optional[str] = None
        last_size: Optional[int] = None
        down_since: Optional[float] = None
        try:
            while True:
                try:
                    if self.status_path:
                        data = await files.read(self.status_path, self.max_bytes)
                        text = None if data is None else data.decode("utf-8", "replace").strip()
                        if text is not None and text != last_status:
                            self.log.info("status: %s", text)
                            last_status = text
                    if self.error_path:
                        err = await files.read(self.error_path, self.max_bytes)
                        if err is not None:
                            msg = err.decode("utf-8", "replace").strip() or "(empty error marker)"
                            yield self._event(FAILED, f"error marker {self.error_path}: {msg}", last_status)
                            return
                    size = await files.size(self.result_path)
                    done = size is not None and size > 0
                    if done and self.done_marker:
                        done = await files.size(self.done_marker) is not None
                    elif done and not self.result_path.endswith(".json"):
                        done = size == last_size          # unchanged across two polls
                    last_size = size
                    if done:
                        data = await files.read(self.result_path, self.max_bytes) or b""
                        try:
                            result = decode_result(data, self.result_path)
                        except ValueError:
                            done = False                      # JSON still being written
                        else:
                            self.log.info("result %s is complete (%d bytes)", self.result_path, len(data))
                            yield self._event(SUCCESS, "result complete", last_status, result)
                            return
                    down_since = None
                except (OSError, asyncio.TimeoutError, EOFError) + _asyncssh_errors() as exc:
                    files.close()
                    down_since = down_since or time.time()
                    self.log.warning("reading status files failed (%s: %s); retrying", type(exc).__name__, exc)
                    if time.time() - down_since > self.ssh_patience:
                        yield self._event(ERROR, f"cannot read the status files: {exc}", last_status)
                        return
                if self.timeout is not None and time.time() - self.started_at > self.timeout:
                    yield self._event(TIMEOUT, f"no complete result {self.result_path} after {self.timeout:g} s",
                                      last_status)
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            files.close()


def _asyncssh_errors() -> tuple:
    try:
        import asyncssh

        return (asyncssh.Error,)
    except ImportError:  # pragma: no cover
        return ()


__all__ = ["StatusFileTrigger", "decode_result"]
