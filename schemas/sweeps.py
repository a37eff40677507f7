"""Sweeps as tables: ``Sweep`` (a search over a base experiment) and ``Sweep.Trial`` (one sampled config).

A trial is an ordinary experiment (``<sweep>.t<number>``, its configs and seeds in the fabrik tables),
so the same ``populate`` workers train it, on every node at once. The sampler's state lives in an Optuna
study in this database (schema ``<prefix>optuna``): :func:`advance` tells it the finished trials'
validation scores and asks for new trials while the budget and the ``parallel`` limit allow; it runs
under an advisory lock, so several callers never exceed the budget. Workers only report per-epoch
validation scores to the study when the sweep prunes.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
from collections.abc import Iterator
from typing import Any

import datajoint as dj

from pipeline.configs import ConfigError
from pipeline.sweeps.report import TrialState
from pipeline.sweeps.spec import SweepSpec, decode_params, trial_experiment, trial_name
from schemas.fabrik import (  # noqa: F401 - Experiment: in a definition
    Experiment,
    Trainer,
    add_experiment,
    experiment_models,
)
from schemas.training import TrainedModel
from schemas.workers import jobs_of

log = logging.getLogger(__name__)
schema = dj.Schema()


@schema
class Sweep(dj.Manual):
    definition = """
    # a hyper-parameter search (`sensorium sweep add`): a base experiment, a search space, a sampler
    sweep_name          : varchar(56)     # name in the sweep file
    ---
    sweep_spec          : json            # the validated sweep (base experiment inlined)
    study_name          : varchar(128)    # Optuna study, in schema <prefix>optuna of this database
    sweep_comment = ""  : varchar(256)    # free text
    sweep_ts = CURRENT_TIMESTAMP : datetime  # when added
    """

    class Trial(dj.Part):
        definition = """
        # one sampled configuration, trained as the experiment <sweep>.t<number>
        -> master
        trial_number    : int32           # Optuna's trial number (0-based)
        ---
        -> Experiment
        params          : json            # {config path: value} set on the base experiment
        optuna_trial_id : int64           # the trial's id in the study's storage
        """


# -- the study ------------------------------------------------------------------------------------------


def optuna_schema() -> str:
    """PostgreSQL schema of the Optuna tables of the active prefix."""
    from schemas import active_settings

    return f"{active_settings().db_prefix}optuna"


def storage():
    """Optuna RDB storage in this database (the same server and login as DataJoint)."""
    from pipeline.sweeps.study import open_storage, storage_url
    from schemas import active_settings

    settings = active_settings()
    db = settings.database
    url = storage_url(db.host, db.port, db.user, db.password, tls=False if db.embedded else settings.tls)
    return open_storage(url, optuna_schema())


def sweep_spec(name: str) -> tuple[SweepSpec, str]:
    """(spec, Optuna study name) of sweep ``name``, from its row (the study's storage is not opened).

    Raises:
        LookupError: no sweep of that name.
    """
    rows = (Sweep & {"sweep_name": name}).proj("sweep_spec", "study_name").to_dicts()
    if not rows:
        raise LookupError(f"no sweep named {name!r}; add it with `sensorium sweep add FILE`")
    return SweepSpec.model_validate(rows[0]["sweep_spec"]), rows[0]["study_name"]


def study(name: str):
    """(spec, Optuna study) of sweep ``name``.

    Raises:
        LookupError: no sweep of that name.
    """
    from pipeline.sweeps.study import open_study

    spec, study_name = sweep_spec(name)
    return spec, open_study(storage(), study_name, spec)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """A session-level advisory lock on the sweep (not a transaction: adding an experiment opens one);
    a wait longer than ``SENSORIUM_LOCK_TIMEOUT_S`` raises ``schemas.locks.LockTimeoutError``."""
    from schemas.locks import session_lock

    lock = f"sensorium-sweep:{Sweep.database}:{name}"
    with session_lock(Sweep.connection, lock, f"the lock of sweep {name!r}"):
        yield


# -- adding and advancing ---------------------------------------------------------------------------------


def add_sweep(spec: SweepSpec, fabrikant: str | None = None) -> dict[str, int]:
    """Insert the sweep (no-op when the same one exists; refused when another has its name) and ask for
    its first trials. Returns :func:`advance`'s counts."""
    from schemas import active_settings

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
                study_name=f"{active_settings().db_prefix}{spec.name}",
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
            trial = ask(st, spec)
            try:
                _store_trial(spec, trial, fabrikant)
            except ConfigError as err:  # a value the builders refuse: the trial fails, the sweep goes on
                log.warning("trial %d of sweep %s is invalid: %s", trial.number, name, err)
                tell(st, trial, state=OptunaState.FAIL)
            asked += 1
        states = [t.state for t in st.get_trials(deepcopy=False)]
    return {
        "told": told,
        "asked": asked,
        "in_flight": sum(s == OptunaState.RUNNING for s in states),
        "finished": sum(s.is_finished() for s in states),
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


# -- pruning, from inside a worker's training job -----------------------------------------------------------


def pruner_for(key: dict):
    """The per-epoch pruner of the TrainedModel ``key`` when it is a trial of a pruning sweep, else None."""
    names = (experiment_models() & key).to_arrays("experiment_name").tolist()
    if not names:
        return None
    trials = (Sweep.Trial & [{"experiment_name": n} for n in names]).to_dicts()
    for trial in trials:
        # the study's storage is opened only for a pruning sweep (this runs at every trial's job start)
        if sweep_spec(trial["sweep_name"])[0].pruning is not None:
            from pipeline.sweeps.study import EpochPruner

            _, st = study(trial["sweep_name"])
            max_epochs = int((Trainer & key).fetch1("trainer_config")["max_iter"])
            return EpochPruner(st, int(trial["optuna_trial_id"]), max_epochs)
    return None
