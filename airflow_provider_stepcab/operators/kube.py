"""Run a cab step as a Kubernetes pod (Stimela's ``kube`` backend) through the cncf KubernetesPodOperator.

:class:`StepcabKubernetesOperator` is both a :class:`~.base.StepcabBaseOperator` (run-time
resolution, skips, outputs, XCom, assets) and a
:class:`~airflow.providers.cncf.kubernetes.operators.pod.KubernetesPodOperator` (pod creation,
waiting, deferral, log following, cleanup). :meth:`~StepcabKubernetesOperator.execute`:

1. resolves the step; if a trigger-time override picked another backend, runs it like the base
   operator would;
2. plans the pod (:func:`~..plan.pod.build_pod`: image, argv as ``command``, resources, pod-spec
   fragments, PVC mounts, user, env, labels), validates it as a ``V1Pod`` and hands it to the
   KPO as ``full_pod_spec``; ``backend.kube.provisioning_timeout`` becomes the pending timeout,
   ``backend.kube.context`` the cluster context;
3. runs the KPO — deferrable by default (the trigger waits; the full log is read on resume),
   or synchronously (lines stream into the task log as the pod writes them);
4. every log line of the step container goes through the cab's wranglers (parsed outputs,
   ``ERROR``, ``DECLARE_SUCCESS``, suppression); the verdict and the reason of a failure — exit
   code, ``OOMKilled``, ``ImagePullBackOff``, unschedulable / pending timeout — end up in the task
   error with the last output lines.

``on_finish_action`` (default ``delete_pod``) and ``on_kill`` (deletes the pod) are the KPO's.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Any, Optional

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager, parse_log_line
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_provider_stepcab.operators import resolve as R
from airflow_provider_stepcab.operators.base import StepcabBaseOperator
from airflow_provider_stepcab.plan.pod import CONTAINER_NAME, PodIdentity, PodPlanError, validate_pod
from airflow_provider_stepcab.recipe.errors import RecipeError
from airflow_provider_stepcab.ui.capture import note_executed

TAIL_LINES = 20
_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


class StepcabKubernetesOperator(StepcabBaseOperator, KubernetesPodOperator):
    """Run one recipe step as a pod (deferrable by default).

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param step_path: labels from the top recipe down to the cab step.
    :param backend: parse-time backend preference (a trigger-time conf override wins).
    :param loop_value: this task's ``for_loop`` value when mapped over a loop.
    :param kubernetes_conn_id: the Airflow ``kubernetes`` connection.
    :param deferrable: wait in the triggerer (default) or in the worker.
    :param on_finish_action: ``delete_pod`` (default), ``delete_succeeded_pod``, ``keep_pod`` …
    :param do_xcom_push: push the step's outputs as ``return_value`` (the KPO's xcom sidecar is
        never used: outputs come from the wranglers and the files).
    :param kwargs: any other KubernetesPodOperator/BaseOperator argument (e.g. ``poll_interval``,
        ``startup_timeout_seconds`` — which then wins over ``backend.kube.provisioning_timeout``).
    """

    mechanism = "kube"
    ui_color = "#dbe9f6"
    template_fields = ()

    def __init__(self, *, recipe_file: str, recipe_name: str, step_path: Any, backend: Any = None,
                 loop_value: Any = None, kubernetes_conn_id: Optional[str] = "kubernetes_default",
                 deferrable: bool = True, on_finish_action: str = "delete_pod",
                 log_pod_spec_on_failure: bool = False, do_xcom_push: bool = True, **kwargs: Any) -> None:
        self._explicit_timeouts = {k for k in ("startup_timeout_seconds", "schedule_timeout_seconds") if k in kwargs}
        kwargs.setdefault("base_container_name", CONTAINER_NAME)
        super().__init__(recipe_file=recipe_file, recipe_name=recipe_name, step_path=step_path,
                         backend=backend, loop_value=loop_value, kubernetes_conn_id=kubernetes_conn_id,
                         deferrable=deferrable, on_finish_action=on_finish_action,
                         log_pod_spec_on_failure=log_pod_spec_on_failure, **kwargs)
        # the KPO's do_xcom_push means "add the xcom sidecar": never; outputs are pushed by _finish
        self.push_outputs, self.do_xcom_push = do_xcom_push, False
        self._wrangler: Any = None
        self._tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
        self._final_pod: Any = None
        self._raised: Optional[dict] = None

    # ----------------------------------------------------------------- resolution and plan

    def on_kill(self) -> None:
        """Delete the pod (the KPO's ``on_kill``); a step switched to a local backend at trigger
        time is stopped like any other."""
        if self._runner is not None:
            StepcabBaseOperator.on_kill(self)
        else:
            KubernetesPodOperator.on_kill(self)

    def plan_pod(self, step: "R.ResolvedStep", context: Any) -> Any:
        """The :class:`~..plan.pod.PodPlan` of ``step`` for this task instance (validated)."""
        ti = context["ti"]
        identity = PodIdentity(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, step=step.fqname,
                               cab=step.cab.name, map_index=getattr(ti, "map_index", -1))
        try:
            from airflow_provider_stepcab.plan.step_plan import pod_command

            planned = pod_command(step, identity=identity, fallback_uid=os.getuid(), fallback_gid=os.getgid())
            plan = planned.plan
            validate_pod(plan.pod)
        except (PodPlanError, ValueError, RecipeError) as exc:
            raise AirflowException(f"step {step.fqname}: {exc}") from None
        for warning in plan.warnings:
            self.log.warning("%s", warning)
        return plan

    def _configure(self, plan: Any, step: "R.ResolvedStep") -> None:
        """Hand the planned pod and the step's kube settings to the KubernetesPodOperator."""
        kube = step.backend.kube
        self.full_pod_spec = validate_pod(plan.pod)
        self.base_container_name = CONTAINER_NAME
        if kube.context and not self.cluster_context:
            self.cluster_context = kube.context
        self._configure_timeouts(step)

    def _configure_timeouts(self, step: "R.ResolvedStep") -> None:
        timeout = step.backend.kube.provisioning_timeout
        if timeout and not self._explicit_timeouts:
            self.startup_timeout_seconds = self.schedule_timeout_seconds = int(timeout)

    # ----------------------------------------------------------------- retry with more memory

    def _outcomes(self, step: "R.ResolvedStep", context: Any) -> Any:
        from airflow_provider_stepcab.runtime.try_outcomes import outcomes_path

        ti = context["ti"]
        return outcomes_path(step.workdir.path, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                             map_index=getattr(ti, "map_index", -1))

    def more_memory(self, step: "R.ResolvedStep", context: Any, resources: Any) -> tuple:
        """``(resources, raised)`` of this try: ``backend.kube.retry_resources`` applied after the
        earlier tries that ended ``OOMKilled`` (:func:`~..plan.escalate.raise_pod_memory`)."""
        from airflow_provider_stepcab.plan import escalate as E
        from airflow_provider_stepcab.runtime.try_outcomes import earlier_reasons

        try:
            rules = E.parse_retry_resources(step.backend.kube.retry_resources, "backend.kube.retry_resources",
                                            E.KUBE_UNITS)
            if not rules:
                return dict(resources or {}), {}
            ooms = E.failure_counts(earlier_reasons(self._outcomes(step, context), context["ti"].try_number))["mem"]
            return E.raise_pod_memory(rules, resources or {}, ooms)
        except E.EscalationError as exc:
            raise AirflowException(f"step {step.fqname}: {exc}") from None

    def _retry_with_more_memory(self, plan: Any, step: "R.ResolvedStep", context: Any) -> None:
        resources, self._raised = self.more_memory(step, context, plan.container.get("resources"))
        if self._raised:
            plan.container["resources"] = resources
        for resource, change in self._raised.items():
            self.log.info("retry with more resources: %s %s -> %s (%s)", resource, change["from"], change["to"],
                          change["why"])

    def _raised_for_this_try(self, step: "R.ResolvedStep", context: Any) -> dict:
        """What :meth:`_retry_with_more_memory` raised (planned again after a deferral: deterministic)."""
        if self._raised is None:
            try:
                self._raised = self.more_memory(step, context, self.plan_pod(step, context).container.get("resources"))[1]
            except AirflowException:
                self._raised = {}
        return self._raised

    # ----------------------------------------------------------------- execute

    def execute(self, context: Any) -> Any:
        step = self.resolve_or_skip(context)
        if step.backend_name != self.mechanism:  # a trigger-time override chose another backend
            return self._finish(step, self.run_resolved(step, context), context)
        self.log.info("step %s (%s) on backend %s in %s", step.fqname, step.cab.name, step.backend_name,
                      step.workdir.path)
        plan = self.plan_pod(step, context)
        self._retry_with_more_memory(plan, step, context)
        self._configure(plan, step)
        note_executed(step, argv=plan.container["command"], pod=plan.pod)
        self.log.info("pod command: %s", plan.container["command"])
        with R.chdir(step.workdir.path):
            R.prepare_outputs(step)
        self._start_wrangling(step)
        try:
            KubernetesPodOperator.execute(self, context)
        except TaskDeferred:
            raise
        except Exception as exc:  # the KPO's failure: diagnose it below
            return self._conclude(step, context, error=exc)
        return self._conclude(step, context)

    def trigger_reentry(self, context: Any, event: dict) -> Any:
        """Resume after the trigger: read the log through the wranglers, clean up, judge."""
        step = self.resolve_or_skip(context, finishing=True)
        self.base_container_name = CONTAINER_NAME
        if step.backend_name == self.mechanism:
            self._configure_timeouts(step)
        self._start_wrangling(step)
        try:
            KubernetesPodOperator.trigger_reentry(self, context, event)
        except TaskDeferred:
            raise
        except Exception as exc:
            return self._conclude(step, context, error=exc, event=event)
        return self._conclude(step, context, event=event)

    # ----------------------------------------------------------------- logs through wranglers

    def _start_wrangling(self, step: "R.ResolvedStep") -> None:
        from airflow_provider_stepcab.recipe.wranglers import WranglerState, Wranglers

        self._wrangler = WranglerState(Wranglers.for_cab(step.cab))
        self._tail.clear()

    def step_line(self, text: str) -> None:
        """One output line of the step container: wranglers, then the task log."""
        if self._wrangler is None:
            self.log.info("%s", text)
            return
        res = self._wrangler.process(text.rstrip(), logging.INFO)
        if res.text is not None:
            self._tail.append(res.text)
            self.log.log(res.level, "%s", res.text)

    @property
    def pod_manager(self) -> PodManager:  # type: ignore[override]
        manager = self.__dict__.get("_stepcab_pod_manager")
        if manager is None:
            manager = self.__dict__["_stepcab_pod_manager"] = _WranglingPodManager(
                kube_client=self.client, callbacks=self.callbacks, sink=self)
        return manager

    @pod_manager.deleter
    def pod_manager(self) -> None:
        self.__dict__.pop("_stepcab_pod_manager", None)

    def _write_logs(self, pod: Any, follow: bool = False, since_time: Any = None) -> None:
        """Deferred path: read the whole log (timestamps on), wrangle every line, show the new ones."""
        import pendulum

        if isinstance(since_time, str):
            since_time = pendulum.parse(since_time.replace("Z", "+00:00"))
        logs = self.client.read_namespaced_pod_log(name=pod.metadata.name, namespace=pod.metadata.namespace,
                                                   container=self.base_container_name, follow=follow,
                                                   timestamps=True, _preload_content=False)
        for raw in logs:
            for piece in raw.decode("utf-8", errors="backslashreplace").splitlines():
                stamp, message = parse_log_line(piece)
                if since_time is not None and stamp is not None and stamp <= since_time:
                    if self._wrangler is not None:  # shown by the trigger already: judge only
                        self._wrangler.process(message.rstrip(), logging.INFO)
                    continue
                self.step_line(message if stamp is not None else piece)

    def cleanup(self, pod: Any, remote_pod: Any, xcom_result: Any = None, context: Any = None) -> None:
        """Remember the pod's final state (re-read while it is not terminal) before the KPO's cleanup."""
        final = remote_pod
        try:
            phase = getattr(getattr(remote_pod, "status", None), "phase", None)
            if remote_pod is not None and phase not in ("Succeeded", "Failed"):
                final = self.pod_manager.read_pod(remote_pod)
        except Exception:  # the pod may be gone already
            final = remote_pod
        self._final_pod = final
        super().cleanup(pod=pod, remote_pod=final, xcom_result=xcom_result, context=context)

    # ----------------------------------------------------------------- verdict

    def _conclude(self, step: "R.ResolvedStep", context: Any, *, error: Optional[BaseException] = None,
                  event: Optional[dict] = None) -> Any:
        from airflow_provider_stepcab.runtime.native import RunResult

        state = self._wrangler
        exit_code, reasons = diagnose(self._final_pod or self.pod, error, event, startup_timeout=self.startup_timeout_seconds)
        note_pod(step, self._final_pod or self.pod)
        errors = list(state.errors) if state is not None else []
        if errors:
            from airflow_provider_stepcab.plan.step_plan import POD, container_argv

            name = os.path.basename(str(container_argv(step, POD)[0]))
            errors.insert(0, f"declaring '{name}' as failed based on its output")
        if state is not None:
            ok = exit_code is not None and state.success(exit_code)
        else:
            ok = exit_code == 0
        if exit_code is not None and exit_code != 0 and ok:
            self.log.info("exit code %s, but the cab's wranglers declared success", exit_code)
        if not ok and exit_code != 0:
            errors += reasons
        pod = self._final_pod or self.pod
        usage = self._account(step, context, pod, exit_code, ok)
        result = RunResult(exit_code=exit_code, success=ok, outputs=dict(state.outputs) if state else {},
                           errors=errors, warnings=list(state.warnings) if state else [], tail=list(self._tail),
                           declared_success=bool(state and state.declared_success), usage=usage)
        return self._finish(step, result, context)

    def _account(self, step: "R.ResolvedStep", context: Any, pod: Any, exit_code: Optional[int], ok: bool) -> Any:
        """Record how this try ended (for the retries' ``retry_resources``) and return the pod's
        ``stepcab_resources`` record (``None`` when the container never ran)."""
        from airflow_provider_stepcab.plan.quantities import kube_quantity
        from airflow_provider_stepcab.runtime.accounting import pod_record
        from airflow_provider_stepcab.runtime.try_outcomes import record_outcome

        term = terminated_state(pod)
        reason = "COMPLETED" if ok else (getattr(term, "reason", None) or "FAILED")
        state = reason if reason in ("COMPLETED", "OOMKilled") else "FAILED"
        try:
            record_outcome(self._outcomes(step, context), context["ti"].try_number, reason=reason, exit_code=exit_code)
        except OSError as exc:  # never fail a step for its bookkeeping
            self.log.warning("cannot record the outcome of this try: %s", exc)
        if term is None:
            return None
        container = next((c for c in (getattr(pod.spec, "containers", None) or []) if c.name == CONTAINER_NAME), None)
        limits = getattr(getattr(container, "resources", None), "limits", None) or {}

        def amount(key: str) -> Optional[float]:
            try:
                return kube_quantity(limits[key]) if key in limits else None
            except ValueError:
                return None

        record = pod_record(pod=pod.metadata.name, state=state, exit_code=exit_code,
                            created=pod.metadata.creation_timestamp, started=term.started_at,
                            finished=term.finished_at, node=getattr(pod.spec, "node_name", None) or "",
                            mem_limit=amount("memory"), cpus=amount("cpu"))
        record["escalated"] = self._raised_for_this_try(step, context)
        return record

    def _finish(self, step: "R.ResolvedStep", result: Any, context: Any) -> Any:
        """The base's :meth:`~.base.StepcabBaseOperator.finish_step`, then ``return_value`` pushed
        here (the KPO's own XCom push is off)."""
        outputs = self.finish_step(step, result, context)
        if self.push_outputs:
            context["ti"].xcom_push(key="return_value", value=outputs)
        return outputs


class _WranglingPodManager(PodManager):
    """The KPO's PodManager, sending the step container's lines through the operator's wranglers."""

    def __init__(self, *, kube_client: Any, callbacks: Any, sink: StepcabKubernetesOperator):
        super().__init__(kube_client=kube_client, callbacks=callbacks)
        self._sink = sink

    def _log_message(self, message: str, container_name: str, container_name_log_prefix_enabled: bool,
                     log_formatter: Any) -> None:
        if container_name != CONTAINER_NAME:
            return super()._log_message(message, container_name, container_name_log_prefix_enabled, log_formatter)
        for line in message.rstrip("\n").split("\n"):  # the KPO may append an empty continuation
            self._sink.step_line(line)


# --------------------------------------------------------------------- helpers (no operator state)

def terminated_state(pod: Any) -> Any:
    """The step container's ``terminated`` state (``exit_code``, ``reason``, times), else ``None``."""
    status = getattr(pod, "status", None)
    cstatus = next((c for c in (getattr(status, "container_statuses", None) or []) if c.name == CONTAINER_NAME), None)
    return getattr(getattr(cstatus, "state", None), "terminated", None)


def note_pod(step: "R.ResolvedStep", pod: Any) -> None:
    """Note on ``step`` the pod that ran (spec, name, last phase) for its Step view; when it was
    deferred, the pod as read back from the cluster (its container command is what ran)."""
    if pod is None:
        return
    ran = getattr(step, "executed", None) or {}
    spec = ran.get("pod")
    if spec is None:
        from kubernetes.client import ApiClient

        spec = ApiClient().sanitize_for_serialization(pod)
    containers = (spec.get("spec") or {}).get("containers") or [{}]
    argv = ran.get("argv") or containers[0].get("command") or []
    note_executed(step, argv=argv, pod=spec, pod_name=getattr(getattr(pod, "metadata", None), "name", None),
                  pod_phase=getattr(getattr(pod, "status", None), "phase", None))


def diagnose(pod: Any, error: Optional[BaseException], event: Optional[dict], *,
             startup_timeout: Optional[int] = None) -> tuple:
    """``(exit code or None, [reasons])`` from the pod's final state, the KPO error and trigger event."""
    reasons: list = []
    exit_code = None
    status = getattr(pod, "status", None)
    cstatus = next((c for c in (getattr(status, "container_statuses", None) or []) if c.name == CONTAINER_NAME), None)
    state = getattr(cstatus, "state", None)
    term, waiting = getattr(state, "terminated", None), getattr(state, "waiting", None)
    if term is not None:
        exit_code = term.exit_code
        if term.reason == "OOMKilled":
            reasons.append(f"container OOMKilled (out of memory; exit code {exit_code}) — raise "
                           "backend.kube.job_pod.memory.limit")
        else:
            detail = f" ({term.reason})" if term.reason else ""
            reasons.append(f"container exited with exit code {exit_code}{detail}"
                           + (f": {term.message.strip()}" if term.message else ""))
    elif waiting is not None and waiting.reason in _PULL_FAILURES:
        reasons.append(f"image cannot be pulled ({waiting.reason})" + (f": {waiting.message}" if waiting.message else ""))
    elif waiting is not None and waiting.reason:
        reasons.append(f"container waiting: {waiting.reason}" + (f": {waiting.message}" if waiting.message else ""))
    chain, exc = [], error
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    names = {type(e).__name__ for e in chain}
    timed_out = "PodLaunchTimeoutException" in names or (event or {}).get("status") == "timeout"
    if term is None:
        scheduled = next((c for c in (getattr(status, "conditions", None) or []) if c.type == "PodScheduled"), None)
        if scheduled is not None and scheduled.status == "False":
            reasons.append(f"pod unschedulable: {scheduled.message or scheduled.reason}")
        if timed_out:
            limit = f" within {startup_timeout}s" if startup_timeout else ""
            reasons.append(f"pod did not start{limit} (pending timeout; backend.kube.provisioning_timeout)")
        elif not reasons:
            first = next((str(e).strip().splitlines()[0] for e in chain if str(e).strip()), None)
            if first:
                reasons.append(first)
            elif event and event.get("message"):
                reasons.append(str(event["message"]).splitlines()[0])
            if status is None and error is not None:
                reasons.append("pod not found (deleted?)")
    return exit_code, reasons


__all__ = ["StepcabKubernetesOperator", "diagnose", "terminated_state"]
