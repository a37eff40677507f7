"""``TrainedModel().load_model(key)``: a real tiny model, trained through populate, rebuilt from the database
with its best weights; its predictions match what the pipeline stored in ``Prediction``."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.experiments import parse_experiment
from tests import factories

NAME = "load_tiny"


@pytest.fixture(scope="module")
def trained(db, session_scans) -> list[dict]:
    """Two trained members (seeds 1 and 2) of a tiny experiment, with their stored predictions."""
    from jobs.runner import populate
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel
    from usecases.experiments import add_experiment

    spec = factories.tiny_experiment(NAME, seeds=(1, 2), scans=session_scans, max_iter=1)
    add_experiment(parse_experiment(spec), "tester")
    populate("gpu", experiment_models(NAME), settings=db)  # regressors, training, predictions
    return (TrainedModel & experiment_models(NAME)).keys(order_by="seed")


def test_loaded_model_predicts_what_the_pipeline_stored(trained):
    import torch

    from pipeline.scoring.predict import predict_indices
    from schemas.evaluation import Prediction
    from schemas.training import TrainedModel

    key = trained[0]
    dataloaders, model = TrainedModel().load_model(key, include_dataloader=True, device="cpu")
    assert not model.training, "a loaded model is in eval mode"
    assert sorted(dataloaders) == sorted(r["data_key"] for r in (TrainedModel.UsedScan & key).to_dicts())
    state = (TrainedModel.Checkpoint & key).fetch1("state_dict")
    for name, value in model.state_dict().items():
        assert torch.equal(value.cpu(), torch.tensor(np.array(state[name]))), name
    for data_key, scan in dataloaders.items():
        trials = np.array([0, 3, 7, scan.n_trials - 1])
        stored = (Prediction.PerScan & key & {"data_key": data_key}).fetch1("predictions")
        predicted = predict_indices(model, scan, trials)
        np.testing.assert_allclose(predicted, np.asarray(stored)[trials], rtol=1e-5, atol=1e-6)

    # the same model from a restricted table (key=None), without the loaders
    alone = (TrainedModel & key).load_model()
    assert isinstance(alone, torch.nn.Module)
    for name, value in alone.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name


def test_a_key_must_select_exactly_one_model(trained):
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel

    with pytest.raises(LookupError, match="matches 2") as several:
        TrainedModel().load_model(experiment_models(NAME))
    assert "\n" not in str(several.value)
    with pytest.raises(LookupError, match="matches 0"):
        TrainedModel().load_model(dict(trained[0], seed=999))
    with pytest.raises(LookupError, match="matches 2"):
        (TrainedModel & experiment_models(NAME)).load_model()


def test_notebook_function_loads_by_experiment_name_and_seed(trained):
    import torch

    from schemas.training import TrainedModel
    from usecases.notebook import load_model

    model = load_model(NAME, seed=2, device="cpu")
    reference = TrainedModel().load_model(trained[1], device="cpu")
    assert isinstance(model, torch.nn.Module)
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name
    with pytest.raises(LookupError, match="has 2 trained models; load_model needs one \\(give the seed\\)"):
        load_model(NAME)
    with pytest.raises(LookupError, match="seed 9 has 0 trained models"):
        load_model(NAME, seed=9)
