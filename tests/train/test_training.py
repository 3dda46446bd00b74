"""jaxvg.train.training and the package namespaces: one object per public name."""

import importlib

import jaxvg
from jaxvg import train
from jaxvg.train import training


def test_public_names_are_the_modules_objects():
    fit_module = importlib.import_module("jaxvg.train.fit")
    for name in training.__all__:
        assert getattr(train, name) is getattr(training, name), name
    assert training.fit is fit_module.fit is jaxvg.fit
    assert training.fit_stacked is jaxvg.fit_stacked and training.TrainConfig is jaxvg.TrainConfig
    assert training.Trainer is jaxvg.Trainer and training.stack_models is jaxvg.stack_models
    assert training.learning_rate_factor is train.optimizers.learning_rate_factor
    assert training.OPTIMIZERS == ("gd", "sgd", "momentum", "adam", "adamw")
    assert training.MONITOR_BATCH == 256


def test_train_imports_measure_at_the_top():
    """The training monitor records `jaxvg.measure` results: the step module imports it eagerly."""
    step = importlib.import_module("jaxvg.train.step")
    assert step.measure is jaxvg.measure
