"""Run a cab step as a Slurm batch job over SSH, waiting deferred (Stimela's ``slurm`` wrapper).

Resolution, outputs and XCom come from :class:`~.base.StepcabBaseOperator`; only the execution
mechanism differs. :meth:`StepcabSlurmOperator.execute`:

1. resolves the step; when its merged backend does not enable ``slurm`` the step runs like the
   base operator would (a registered runner, e.g. native);
2. builds the command and the batch script (:mod:`..plan.slurm`, :mod:`..plan.sbatch`). Slurm wraps
   the step's inner backend (``select`` without ``slurm``): ``native`` runs the native argv;
   ``singularity`` runs the ``exec`` argv of :mod:`..plan.singularity` on the compute node — one SSH
   command on the login node first runs ``remote_dependencies`` (``module load apptainer``), finds
   ``apptainer``/``singularity`` and, with ``build_local: true``, builds a missing image there;
   otherwise the build is a step of the job script. ``::EPHn::`` temporary directories are made by
   the job script on the compute node (``mktemp -d``), as Stimela's ``slurm_runner.sh`` does;
3. **reattaches instead of submitting twice**: job names are deterministic per try
   (:func:`~..plan.slurm.try_names`); this try's job in any state, or an earlier try's job that is
   still queued/running or completed with exit code 0, is adopted (a retry after a worker died);
4. otherwise uploads the script over SFTP and runs ``sbatch --parsable``;
5. pushes ``slurm_job`` (job id, name, directory) to XCom *before* deferring, then defers to
   :class:`~..triggers.slurm.SlurmJobTrigger`.

:meth:`StepcabSlurmOperator.execute_complete` reads the job's output through the cab's wranglers
(parsed outputs, ``ERROR``/``DECLARE_SUCCESS``), then finishes like the base operator or fails
saying why: exit code, Slurm state (``TIMEOUT``, ``CANCELLED`` ...) and the last log lines.
Files are assumed to be on a filesystem shared by the worker and the cluster (as in Stimela).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any, Mapping, Optional

from airflow.sdk.exceptions import AirflowException

from airflow_provider_stepcab.operators import resolve as R
from airflow_provider_stepcab.operators.base import StepcabBaseOperator
from airflow_provider_stepcab.plan import slurm as P
from airflow_provider_stepcab.plan.sbatch import SCRIPT, build_sbatch_script
from airflow_provider_stepcab.recipe.errors import RecipeError

XCOM_JOB_KEY = "slurm_job"
MAX_OUTPUT_BYTES = 16 << 20
#: seconds allowed for the login-node preparation of a singularity step (it may build an image)
PREPARE_TIMEOUT = 3600.0


class StepcabSlurmOperator(StepcabBaseOperator):
    """Run one recipe step as a Slurm job submitted over SSH (deferrable).

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param step_path: labels from the top recipe down to the cab step.
    :param backend: parse-time backend preference (a trigger-time conf override wins).
    :param loop_value: this task's ``for_loop`` value when mapped over a loop.
    :param slurm_defaults: deployment defaults for ``backend.slurm`` (e.g. ``ssh_conn_id``,
        ``remote_dir``); the recipe's settings win over them.
    """

    mechanism = "slurm"
    ui_color = "#e3e7f7"

    def __init__(self, *, recipe_file: str, recipe_name: str, step_path: Any, backend: Any = None,
                 loop_value: Any = None, slurm_defaults: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> None:
        super().__init__(recipe_file=recipe_file, recipe_name=recipe_name, step_path=step_path,
                         backend=backend, loop_value=loop_value, **kwargs)
        self.slurm_defaults = dict(slurm_defaults or {})
        self._job: Optional[dict] = None
        self._earlier: dict = {}
        self._local_only = False

    # ----------------------------------------------------------------- resolution

    def available_backends(self) -> list:
        """Slurm wraps ``native`` and ``singularity``: their runtime lives on the cluster, so both
        are selectable here whatever this worker has installed (unless the step turned out not to
        be wrapped: then only what runs here)."""
        local = super().available_backends()
        return local if self._local_only else sorted({*local, "native", "singularity"})

    def _options(self, step: "R.ResolvedStep") -> P.SlurmSubmitOptions:
        section = dict(self.slurm_defaults)
        section.update((step.backend_tree or {}).get("slurm") or {})
        try:
            opts, _unknown = P.parse_slurm_options(section)
        except P.SlurmPlanError as exc:
            raise AirflowException(f"step {step.fqname}: {exc}") from None
        return opts

    @staticmethod
    def _wrapped(step: "R.ResolvedStep") -> bool:
        return getattr(step.backend, "wrapper", None) == "slurm"

    # ----------------------------------------------------------------- execute

    def execute(self, context: Any) -> Any:
        self._local_only = False
        step = self.resolve_or_skip(context)
        if not self._wrapped(step) and step.backend_name not in StepcabBaseOperator.available_backends(self):
            self._local_only = True  # not under slurm: choose among the backends of this worker
            step = self.resolve_or_skip(context)
        if not self._wrapped(step):
            return self.finish_step(step, self.run_resolved(step, context), context)
        self.log.info("step %s (%s) on backend %s under slurm in %s", step.fqname, step.cab.name,
                      step.backend_name, step.workdir.path)
        try:
            P.check_backend(step.backend_name)
        except P.SlurmPlanError as exc:
            raise AirflowException(f"step {step.fqname}: {exc}") from None
        opts = self._options(step)
        with R.chdir(step.workdir.path):
            R.prepare_outputs(step)
        ti = context["ti"]
        from airflow_provider_stepcab.hooks.slurm_local import make_slurm_hook

        hook = make_slurm_hook(opts.ssh_conn_id)
        try:
            job = self._reattach(hook, opts, ti) or self._submit(hook, opts, step, ti)
        finally:
            hook.close()
        self._job = job
        ti.xcom_push(key=XCOM_JOB_KEY, value=job)
        if opts.local:  # on the login node: wait here, no triggerer runs on this host
            return self._wait_here(job, opts, context)
        self._defer(job, opts)

    def _wait_here(self, job: dict, opts: P.SlurmSubmitOptions, context: Any) -> Any:
        from airflow_provider_stepcab.triggers.slurm_local import wait_here

        return self.execute_complete(context, wait_here(self._trigger(job, opts)))

    def _trigger(self, job: dict, opts: P.SlurmSubmitOptions) -> Any:
        from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

        deadline = None
        if self.execution_timeout is not None:
            deadline = time.time() + self.execution_timeout.total_seconds()
        return SlurmJobTrigger(
            ssh_conn_id=opts.ssh_conn_id, job_id=job["job_id"], job_dir=job["job_dir"], job_name=job["job_name"],
            poll_interval=opts.poll_interval, stream_logs=opts.stream_logs, exit_grace=opts.exit_grace,
            missing_grace=opts.missing_grace, ssh_patience=opts.ssh_patience, deadline=deadline,
            log_chunk_size=opts.log_chunk_size)

    def _defer(self, job: dict, opts: P.SlurmSubmitOptions) -> None:
        self.defer(trigger=self._trigger(job, opts), method_name="execute_complete")

    def _base_dir(self, hook: Any, opts: P.SlurmSubmitOptions) -> str:
        return hook.absolute(opts.remote_dir)

    def _reattach(self, hook: Any, opts: P.SlurmSubmitOptions, ti: Any) -> Optional[dict]:
        """This try's job in any state, or an earlier try's live / successful job (see module doc)."""
        map_index = getattr(ti, "map_index", -1)
        names = P.try_names(ti.dag_id, ti.run_id, ti.task_id, map_index, ti.try_number)
        found = hook.jobs(names=names.values())
        self._earlier = earlier_tries(found, names, ti.try_number)
        if not found:
            return None
        base = self._base_dir(hook, opts)
        for try_number, name in names.items():
            for info in sorted((j for j in found.values() if j.name == name), key=lambda j: -int(j.job_id)):
                directory = P.job_dir(base, ti.dag_id, ti.run_id, ti.task_id, map_index, try_number)
                ok = try_number == ti.try_number or info.active
                if not ok and info.state == "COMPLETED":
                    ok = (hook.read_text(f"{directory}/exitcode", 64) or "").strip() == "0"
                if ok:
                    self.log.info("reattaching to Slurm job %s (%s, try %s, %s) instead of submitting again",
                                  info.job_id, name, try_number, info.state)
                    return {"job_id": info.job_id, "job_name": name, "job_dir": directory,
                            "ssh_conn_id": opts.ssh_conn_id, "try_number": try_number, "reattached": True}
                self.log.info("earlier Slurm job %s (%s) ended %s: submitting a new one",
                              info.job_id, name, info.state)
        return None

    def _submit(self, hook: Any, opts: P.SlurmSubmitOptions, step: "R.ResolvedStep", ti: Any) -> dict:
        map_index = getattr(ti, "map_index", -1)
        name = P.try_names(ti.dag_id, ti.run_id, ti.task_id, map_index, ti.try_number)[ti.try_number]
        directory = P.job_dir(self._base_dir(hook, opts), ti.dag_id, ti.run_id, ti.task_id, map_index,
                              ti.try_number)
        env = dict(step.env)
        recipe_dir = os.path.dirname(os.path.abspath(self.recipe_file))
        env["PYTHONPATH"] = recipe_dir
        from airflow_provider_stepcab.plan.step_plan import slurm_job

        inner, wrap, exe = self._command(hook, opts, step)
        opts, raised = self._more_resources(hook, opts)
        try:
            spec = slurm_job(opts, inner, name=name, directory=directory, workdir=str(step.workdir.path), env=env,
                             wrap=wrap, executable=exe)
            script = build_sbatch_script(spec)
        except (P.SlurmPlanError, ValueError, RecipeError) as exc:
            raise AirflowException(f"step {step.fqname}: {exc}") from None
        self.log.info("running under slurm: %s", " ".join(spec.argv))
        path = f"{directory}/{SCRIPT}"
        hook.write_text(path, script, 0o755)
        job_id = hook.submit(path)
        self.log.info("submitted Slurm job %s (%s) via %s; job directory %s", job_id, name, opts.ssh_conn_id,
                      directory)
        return {"job_id": job_id, "job_name": name, "job_dir": directory, "ssh_conn_id": opts.ssh_conn_id,
                "try_number": ti.try_number, "reattached": False, "escalated": raised,
                "argv": list(spec.argv), "script": script}

    def _more_resources(self, hook: Any, opts: P.SlurmSubmitOptions) -> tuple:
        """This try's options after ``retry_resources`` (:mod:`.slurm_resources`)."""
        from airflow_provider_stepcab.operators.slurm_resources import escalated_options, job_resources

        try:
            return escalated_options(opts, self._earlier,
                                     accounting=lambda job_id: job_resources(hook, job_id, patience=0), log=self.log)
        except ValueError as exc:
            raise AirflowException(f"backend.slurm.retry_resources: {exc}") from None

    def _command(self, hook: Any, opts: P.SlurmSubmitOptions, step: "R.ResolvedStep") -> tuple:
        """What the job runs: ``(inner StepCommand, SlurmWrap or None, executable or None)``."""
        from airflow_provider_stepcab.plan.step_plan import native_command

        if step.backend_name == "native":
            try:
                return native_command(step, python=sys.executable), None, None
            except (ValueError, RecipeError) as exc:
                raise AirflowException(f"step {step.fqname}: {exc}") from None
        return self._singularity_command(hook, opts, step)

    def _singularity_command(self, hook: Any, opts: P.SlurmSubmitOptions, step: "R.ResolvedStep") -> tuple:
        """The singularity ``exec`` command for the compute node; the executable found (and, with
        ``build_local``, the image built) on the login node after ``remote_dependencies``."""
        from airflow_provider_stepcab.plan.images import ImageError
        from airflow_provider_stepcab.plan.singularity import ContainerPlanError
        from airflow_provider_stepcab.plan.step_plan import SlurmWrap, singularity_command
        from airflow_provider_stepcab.runtime.containers import REBUILT_IMAGES, RemoteHomeFs

        sing, build_local = step.backend.singularity, bool(step.backend.slurm.build_local)
        try:
            inner = singularity_command(step, executable=sing.executable or "singularity",
                                        fs=RemoteHomeFs(hook.home()))
        except (ContainerPlanError, ImageError, ValueError, RecipeError) as exc:
            raise AirflowException(f"step {step.fqname}: {exc}") from None
        plan = inner.plan
        image = P.ImageCheck(simg=plan.simg, source=None if plan.image.prebuilt else plan.image.docker_uri,
                             auto_build=bool(sing.auto_build),
                             rebuild=bool(sing.rebuild) and plan.simg not in REBUILT_IMAGES)
        where = "on the login node" if build_local else "in the job"
        self.log.info("singularity image %s (built %s when missing)", plan.simg, where)
        script = P.singularity_prepare_script(opts.remote_dependencies, executable=sing.executable,
                                              image=image if build_local else None,
                                              workdir=opts.remote_workdir or str(step.workdir.path))
        rc, out, err = hook.run(f"bash -c {shlex.quote(script)}", check=False, timeout=PREPARE_TIMEOUT)
        for line in (out + err).splitlines():
            if line.strip() and not line.startswith(P.EXE_MARK):
                self.log.info("[login node] %s", line)
        exe = P.parse_prepare_output(out)
        if rc != 0 or not exe:
            raise AirflowException(f"step {step.fqname}: preparing singularity on the cluster failed "
                                   f"(exit {rc}): {(err.strip() or out.strip())[-2000:]}")
        if image.rebuild:
            REBUILT_IMAGES.add(plan.simg)
        setup = []
        if plan.mkdirs:
            setup.append("mkdir -p -- " + " ".join(shlex.quote(d) for d in plan.mkdirs) + " || exit $?")
        if not build_local:
            setup += P.image_lines(shlex.quote(exe), image)
        return inner, SlurmWrap(setup=setup, ephemeral=dict(plan.ephemeral), clean_ephemeral=bool(sing.clean_tmp)), exe

    def cache_missing_outputs(self, step: "R.ResolvedStep", paths: list) -> list:
        """Step cache (:mod:`.step_cache`): the recorded outputs missing on the cluster (SFTP),
        read where the job runs them (``remote_workdir`` in place of the working directory)."""
        from airflow_provider_stepcab.hooks.slurm_local import make_slurm_hook

        opts = self._options(step)
        local, remote = str(step.workdir.path), opts.remote_workdir
        there = {p: (remote + p[len(local):] if remote and (p == local or p.startswith(local + "/")) else p)
                 for p in paths}
        hook = make_slurm_hook(opts.ssh_conn_id)
        try:
            gone = set(hook.missing(there.values()))
        finally:
            hook.close()
        return [p for p, q in there.items() if q in gone]

    # ----------------------------------------------------------------- completion

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        """Turn the trigger's :class:`~..triggers.events.SlurmJobEvent` into success or a failure."""
        from airflow_provider_stepcab.hooks.slurm_local import make_slurm_hook
        from airflow_provider_stepcab.runtime.native import RunResult
        from airflow_provider_stepcab.triggers.events import SlurmJobEvent

        ev = SlurmJobEvent.from_dict(event)
        self._local_only = False  # it was submitted: a wrapped step
        step = self.resolve_or_skip(context, finishing=True)
        self._note_job(step, context)
        opts = self._options(step)
        self.log.info("Slurm job %s (%s) ended: %s%s", ev.job_id, ev.job_name, ev.status,
                      f" ({ev.message})" if ev.message else "")
        hook = make_slurm_hook(opts.ssh_conn_id)
        try:
            state = self._wrangle(hook, step, ev)
            ok = ev.exit_code is not None and ev.status in ("success", "failed") and state.success(ev.exit_code)
            errors = list(state.errors)
            if state.errors:
                errors.insert(0, f"declaring '{step.cab.name}' as failed based on its output")
            if not ok:
                errors.append(f"Slurm job {ev.job_id} ({ev.job_name}) {ev.status}: {ev.message}")
            if opts.cleanup == "always" or (opts.cleanup == "on_success" and ok):
                self.log.info("removing the remote job directory %s (cleanup=%s)", ev.job_dir, opts.cleanup)
                hook.remove_dir(ev.job_dir)
            self._account(hook, ev, context)
        finally:
            hook.close()
        result = RunResult(exit_code=ev.exit_code, success=ok, outputs=dict(state.outputs), errors=errors,
                           warnings=list(state.warnings), tail=list(ev.tail),
                           declared_success=state.declared_success)
        return self.finish_step(step, result, context)

    def _note_job(self, step: "R.ResolvedStep", context: Any) -> None:
        """The submitted argv and sbatch script (the job's XCom) noted for the Step view."""
        from airflow_provider_stepcab.ui.capture import note_executed

        ti = context["ti"]
        job = self._job or ti.xcom_pull(task_ids=ti.task_id, key=XCOM_JOB_KEY, map_indexes=ti.map_index)
        if isinstance(job, dict) and job.get("argv"):
            note_executed(step, argv=job["argv"], script=job.get("script"))

    def _account(self, hook: Any, ev: Any, context: Any) -> None:
        """sacct's figures for the job: the log's last lines and the ``stepcab_resources`` XCom."""
        from airflow_provider_stepcab.operators.slurm_resources import job_resources, report_resources

        if not ev.job_id:
            return
        ti = context["ti"]
        job = self._job or ti.xcom_pull(task_ids=ti.task_id, key=XCOM_JOB_KEY, map_indexes=ti.map_index)
        try:
            record = job_resources(hook, ev.job_id)
        except Exception as exc:  # noqa: BLE001 - accounting never fails a step
            self.log.warning("accounting of Slurm job %s failed: %s", ev.job_id, exc)
            return
        report_resources(record, log=self.log, ti=ti, job=job if isinstance(job, dict) else None)

    def _wrangle(self, hook: Any, step: "R.ResolvedStep", ev: Any) -> Any:
        """Run the job's whole output through the cab's wranglers (outputs, errors, success)."""
        from airflow_provider_stepcab.recipe.wranglers import WranglerState, Wranglers

        state = WranglerState(Wranglers.for_cab(step.cab))
        if not ev.job_dir:
            return state
        for stream in ("stdout", "stderr"):
            text = hook.read_text(f"{ev.job_dir}/{stream}.log", MAX_OUTPUT_BYTES) or ""
            for line in text.splitlines():
                state.process(line.rstrip())
        return state

    def on_kill(self) -> None:
        """Killed while submitting (the deferred wait cancels through the trigger's ``on_kill``)."""
        job = self._job
        if job:
            from airflow_provider_stepcab.hooks.slurm_local import make_slurm_hook

            self.log.info("on_kill: cancelling Slurm job %s", job["job_id"])
            hook = make_slurm_hook(job["ssh_conn_id"])
            try:
                hook.cancel(job_id=job["job_id"])
            finally:
                hook.close()


def earlier_tries(found: Mapping[str, Any], names: Mapping[int, str], try_number: int) -> dict:
    """``{try: {"job_id", "state"}}``: the newest job of each earlier try, by its job name."""
    out = {}
    for number, name in names.items():
        jobs = [j for j in found.values() if j.name == name]
        if number < try_number and jobs:
            newest = max(jobs, key=lambda j: int(j.job_id))
            out[number] = {"job_id": newest.job_id, "state": newest.state}
    return out


__all__ = ["StepcabSlurmOperator", "XCOM_JOB_KEY", "earlier_tries"]
