"""Adding and advancing sweeps: each asked trial becomes an ordinary experiment, which the same workers
train; finished trials' validation scores go back to the Optuna study.

:func:`advance` runs under an advisory lock on the sweep, so several callers never exceed its budget.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
from collections.abc import Iterator
from typing import Any

from jobs.queues import jobs_of
from pipeline.configs import ConfigError
from pipeline.sweeps.report import TrialState
from pipeline.sweeps.spec import SweepSpec, decode_params, trial_experiment, trial_name
from schemas.fabrik import experiment_models
from schemas.locks import session_lock
from schemas.sweeps import Sweep, prefix_of_schemas, study
from schemas.training import TrainedModel
from usecases.experiments import add_experiment

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """A session-level advisory lock on the sweep (not a transaction: adding an experiment opens one);
    a wait longer than ``SENSORIUM_LOCK_TIMEOUT_S`` raises ``schemas.locks.LockTimeoutError``."""
    lock = f"sensorium-sweep:{Sweep.database}:{name}"
    with session_lock(Sweep.connection, lock, f"the lock of sweep {name!r}"):
        yield


# -- adding and advancing ---------------------------------------------------------------------------------


def add_sweep(spec: SweepSpec, fabrikant: str | None = None) -> dict[str, int]:
    """Insert the sweep (no-op when the same one exists; refused when another has its name) and ask for
    its first trials. Returns :func:`advance`'s counts."""
    key = {"sweep_name": spec.name}
    existing = (Sweep & key).to_dicts()
    if existing and existing[0]["sweep_spec"] != spec.as_dict():
        raise ConfigError(
            f"sweep {spec.name!r} already exists with another definition; give this one a new name"
        )
    if not existing:
        Sweep.insert1(
            dict(
                key,
                sweep_spec=spec.as_dict(),
                study_name=f"{prefix_of_schemas()}{spec.name}",
                sweep_comment=spec.comment[:256],
            )
        )
    return advance(spec.name, fabrikant)


def trial_states(name: str, frozen: dict[int, Any] | None = None) -> list[TrialState]:
    """Every trial of sweep ``name`` with its status and validation score (never a test score)."""
    rows = (Sweep.Trial & {"sweep_name": name}).to_dicts(order_by="trial_number")
    frozen = (
        frozen if frozen is not None else {t.number: t for t in study(name)[1].get_trials(deepcopy=False)}
    )
    out = []
    for row in rows:
        members = member_keys(row["experiment_name"])
        n_members = len(members)
        trained = (TrainedModel & members).proj("best_val_corr", "epochs").to_dicts() if members else []
        jobs = jobs_of(TrainedModel) & members if members else jobs_of(TrainedModel) & "false"
        errors = [m.splitlines()[0] for m in (jobs & {"status": "error"}).to_arrays("error_message") if m]
        reserved = len(jobs & {"status": "reserved"})
        attrs = frozen[row["trial_number"]].user_attrs if row["trial_number"] in frozen else {}
        state = TrialState(
            row["trial_number"],
            row["experiment_name"],
            row["params"],
            "pending",
            members=n_members,
            trained=len(trained),
            errors=errors,
            pruned_at=attrs.get("pruned_at_epoch"),
        )
        if trained:
            state.score = sum(t["best_val_corr"] for t in trained) / len(trained)
            state.epochs = max(int(t["epochs"]) for t in trained)
        if n_members and len(trained) == n_members:
            state.status = "pruned" if state.pruned_at else "complete"
        elif errors:
            state.status = "error"
        elif reserved:
            state.status = "training"
        out.append(state)
    return out


def member_keys(experiment: str) -> list[dict[str, Any]]:
    """The TrainedModel keys of an experiment's members."""
    pk = TrainedModel.primary_key
    return [{k: r[k] for k in pk} for r in experiment_models(experiment).to_dicts()]


def advance(name: str, fabrikant: str | None = None) -> dict[str, int]:
    """Tell the study every finished trial, then ask for new ones up to ``parallel`` in flight and
    ``budget`` in all, each inserted as an experiment. Safe to call from any number of processes.

    Returns:
        ``{"told": .., "asked": .., "in_flight": .., "finished": .., "budget": ..}``.
    """
    from optuna.trial import TrialState as OptunaState

    from pipeline.sweeps.study import ask, tell

    fabrikant = fabrikant or getpass.getuser()
    with _locked(name):
        spec, st = study(name)
        frozen = {t.number: t for t in st.get_trials(deepcopy=False)}
        told = 0
        for trial in trial_states(name, frozen):
            if frozen[trial.number].state != OptunaState.RUNNING:
                continue
            if trial.status == "complete":
                tell(st, trial.number, trial.score)
            elif trial.status == "pruned":
                tell(st, trial.number, state=OptunaState.PRUNED)
            elif trial.status == "error":
                tell(st, trial.number, state=OptunaState.FAIL)
            else:
                continue
            told += 1
        stored = set((Sweep.Trial & {"sweep_name": name}).to_arrays("trial_number").tolist())
        # a trial asked by a call that failed before its experiment was stored: store it now
        for number, t in sorted(frozen.items()):
            if number not in stored and t.state == OptunaState.RUNNING:
                _store_trial(spec, t, fabrikant)
                stored.add(number)
        asked = 0
        while True:
            states = {t.number: t.state for t in st.get_trials(deepcopy=False)}
            in_flight = sum(s == OptunaState.RUNNING for s in states.values())
            if len(states) >= spec.budget or in_flight >= spec.parallel:
                break
            asked_trial = ask(st, spec)
            try:
                _store_trial(spec, asked_trial, fabrikant)
            except ConfigError as err:  # a value the builders refuse: the trial fails, the sweep goes on
                log.warning("trial %d of sweep %s is invalid: %s", asked_trial.number, name, err)
                tell(st, asked_trial, state=OptunaState.FAIL)
            asked += 1
        final = [t.state for t in st.get_trials(deepcopy=False)]
    return {
        "told": told,
        "asked": asked,
        "in_flight": sum(s == OptunaState.RUNNING for s in final),
        "finished": sum(s.is_finished() for s in final),
        "budget": spec.budget,
    }


def _store_trial(spec: SweepSpec, frozen, fabrikant: str) -> None:
    """Insert the experiment of an asked trial (an Optuna ``Trial`` or ``FrozenTrial``: number, params and
    the storage id, which Optuna keeps in ``_trial_id`` on both) and its ``Sweep.Trial`` row."""
    params = decode_params(spec, frozen.params)
    experiment = trial_experiment(spec, frozen.number, params)
    add_experiment(experiment, fabrikant)
    Sweep.Trial.insert1(
        {
            "sweep_name": spec.name,
            "trial_number": frozen.number,
            "experiment_name": trial_name(spec.name, frozen.number),
            "params": params,
            "optuna_trial_id": frozen._trial_id,
        },
        skip_duplicates=True,
    )


def sweep_experiments(name: str) -> list[str]:
    """Names of the trial experiments of sweep ``name`` (for restricting populate)."""
    return (Sweep.Trial & {"sweep_name": name}).to_arrays("experiment_name").tolist()
