"""Optuna studies of sweeps, stored in the pipeline's own PostgreSQL (schema ``<prefix>optuna``).

The samplers (grid, random, TPE) and the median pruner are Optuna's; this module only maps a
:class:`~pipeline.sweeps.spec.SweepSpec` onto them and opens the study's RDB storage. TPE runs with
``constant_liar`` so that trials asked while others are still training (several workers) spread out
instead of piling onto the same point.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from pipeline.sweeps.spec import SweepSpec, encode_choice, grid_points

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def storage_url(host: str, port: int, user: str, password: str, *, tls: bool | None) -> str:
    """The SQLAlchemy URL of the database DataJoint uses (``postgres``).

    ``host`` is a host name, or a Unix-socket folder (an absolute path: the embedded server, or a local
    one), which libpq takes as the ``host`` query parameter together with the port naming the socket.
    """
    from sqlalchemy.engine import URL

    socket = host.startswith("/")
    query: dict[str, str] = {"host": host, "port": str(port)} if socket else {}
    if tls is not None:
        query["sslmode"] = "require" if tls else "disable"
    url = URL.create(
        "postgresql+psycopg2",
        username=user,
        password=password,
        host=None if socket else host,
        port=None if socket else port,
        database="postgres",
        query=query,
    )
    return url.render_as_string(hide_password=False)


def open_storage(url: str, schema: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with its tables in PostgreSQL schema ``schema`` (created when missing).

    No connection pool: a worker touches the storage once per epoch at most, and idle pooled
    connections would count against a shared server's limit.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            exists = conn.execute(
                sqlalchemy.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
            ).first()
            if not exists:
                conn.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={"poolclass": NullPool, "connect_args": {"options": f"-csearch_path={schema}"}},
    )


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """Optuna distributions of the search space (lists: categorical, with encoded choices)."""
    out: dict[str, BaseDistribution] = {}
    for path, param in spec.space.items():
        if isinstance(param, list):
            out[path] = CategoricalDistribution([encode_choice(c) for c in param])
            continue
        kind, (low, high) = next(iter(param.items()))
        if kind == "uniform":
            out[path] = FloatDistribution(float(low), float(high))
        elif kind == "log_uniform":
            out[path] = FloatDistribution(float(low), float(high), log=True)
        else:
            out[path] = IntDistribution(int(low), int(high), log=kind == "log_int")
    return out


def sampler(spec: SweepSpec, n_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler that asks for trial number ``n_trials``.

    Random and TPE samplers are seeded with ``spec.seed + n_trials``: every ask comes from a freshly
    opened study (a new process, often), and a sampler seeded the same way each time would draw the same
    "random" point again. The grid sampler keeps ``spec.seed`` (it skips the points already taken).
    """
    if spec.sampler == "grid":
        # the grid's seed fixes its order (grid ids index a seeded permutation): the same for every ask
        return optuna.samplers.GridSampler(grid_points(spec), seed=spec.seed)
    seed = spec.seed + n_trials
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.tpe_startup_trials, constant_liar=True
        )


def pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruning is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.pruning.startup_trials, n_warmup_steps=spec.pruning.warmup_epochs
    )


def open_study(storage: optuna.storages.RDBStorage, study_name: str, spec: SweepSpec) -> optuna.Study:
    """The sweep's study (created on first use), with its pruner; see :func:`ask` for the sampler."""
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=sampler(spec),
        pruner=pruner(spec),
        direction="maximize",
        load_if_exists=True,
    )


def ask(study: optuna.Study, spec: SweepSpec) -> optuna.trial.Trial:
    """A new trial of the search space, from the sampler seeded for the trial's number."""
    study.sampler = sampler(spec, len(study.get_trials(deepcopy=False)))
    return study.ask(distributions(spec))


def tell(study: optuna.Study, trial: Any, value: float | None = None, state: Any = None) -> None:
    """``study.tell`` for a trial number or object (``state`` PRUNED / FAIL, else ``value``).

    Optuna's grid sampler calls ``study.stop()`` when the last grid point is told, which outside
    ``study.optimize`` raises RuntimeError after the result is already stored; that one is harmless here.
    """
    try:
        if state is None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


class EpochPruner:
    """Called after every epoch of a trial's training: reports the validation correlation to the study
    and says whether to stop (the trial is then told PRUNED once its row is stored)."""

    PRUNED_AT = "pruned_at_epoch"

    def __init__(self, study: optuna.Study, trial_id: int, max_epochs: int):
        self.study, self.trial_id, self.max_epochs = study, trial_id, max_epochs

    def __call__(self, record: Any) -> bool:
        trial = optuna.trial.Trial(self.study, self.trial_id)
        with warnings.catch_warnings():  # an epoch reported before a resume is ignored, with a warning
            warnings.simplefilter("ignore")
            trial.report(float(record.val_corr), int(record.epoch))
        # after the last epoch the value is recorded, but there is nothing left to prune
        if record.epoch >= self.max_epochs or not trial.should_prune():
            return False
        trial.set_user_attr(self.PRUNED_AT, int(record.epoch))
        log.info("trial pruned after epoch %d (validation correlation %.4f)", record.epoch, record.val_corr)
        return True
