"""Sweeps as tables: ``Sweep`` (a search over a base experiment) and ``Sweep.Trial`` (one sampled config),
the Optuna study a sweep's row names, and the pruner a training job asks for (adding and advancing
sweeps is :mod:`usecases.sweeps`).

A trial is an ordinary experiment (``<sweep>.t<number>``, its configs and seeds in the fabrik tables),
so the same ``populate`` workers train it, on every node at once. The sampler's state lives in an Optuna
study in this database (schema ``<prefix>optuna``): :func:`advance` tells it the finished trials'
validation scores and asks for new trials while the budget and the ``parallel`` limit allow; it runs
under an advisory lock, so several callers never exceed the budget. Workers only report per-epoch
validation scores to the study when the sweep prunes.
"""

from __future__ import annotations

import datajoint as dj

from pipeline.sweeps.spec import SweepSpec
from schemas.binding import bound_settings
from schemas.fabrik import Experiment, Trainer, experiment_models  # noqa: F401 - Experiment: in a definition

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


def prefix_of_schemas() -> str:
    """The prefix the schemas are bound with (``Sweep``'s schema is ``<prefix>sweeps``)."""
    return Sweep.database[: -len("sweeps")]


def optuna_schema() -> str:
    """PostgreSQL schema of the Optuna tables of the active prefix."""
    return f"{bound_settings().db_prefix}optuna"


def storage():
    """Optuna RDB storage in this database (the same server and login as DataJoint)."""
    from pipeline.sweeps.study import open_storage, storage_url

    settings = bound_settings()
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
