"""Fixtures of the training tests: one small finished run shared by the module.

Runs train the `digits` MLP for two epochs with a tiny evaluation (2 K-means
initializations, 2 probe epochs) so that each takes seconds.
"""

import pytest

#: Options of every training run in these tests.
SMALL_RUN = dict(epochs=2, kmeans_init=2, probe_epochs=2, verbose=0, seed=0)


@pytest.fixture(scope="session")
def small_run():
    """Keyword arguments of `training.fit.run` for a quick two-epoch run."""
    return dict(SMALL_RUN)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The folder of a finished `digits softvq` run (do not modify it)."""
    from training.fit import run

    return run("digits", "softvq", out=tmp_path_factory.mktemp("runs") / "digits-softvq", **SMALL_RUN)
