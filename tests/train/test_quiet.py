"""A plain train() prints the progress bar with the loss, and nothing else."""

import logging
import warnings

import pytest
from lightning.pytorch.callbacks import Callback

import glassvi
from glassvi.train import GlassProgressBar, progress_bar_kwargs, quiet_training
from glassvi.train._quiet import LIGHTNING_LOGGERS


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def small():
    adata = glassvi.data.simulate(n_cells=150, n_genes=60, n_programs=4, seed=0)
    glassvi.model.LinearVI.setup_anndata(adata, layer="counts")
    return adata


def test_plain_training_prints_only_the_progress_bar(small, capfd):
    handler = _Records()
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = glassvi.model.LinearVI(small, n_latent=3)
            model.train(max_epochs=2, batch_size=64, accelerator="cpu")
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    out, err = capfd.readouterr()
    assert err.strip() == "", err
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in handler.records if r.levelno >= logging.INFO] == []
    # the bar shows the loss, not Lightning's version number
    assert "train_loss=" in out and "v_num" not in out
    # logging levels and warning filters are as they were
    assert [lg.level for lg in loggers] == levels


def test_training_twice_keeps_dropout_on(small):
    model = glassvi.model.LinearVI(small, n_latent=3)
    model.train(max_epochs=1, enable_progress_bar=False, accelerator="cpu")
    model.get_latent_representation()
    seen = []

    class Mode(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(pl_module.module.training)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=1, enable_progress_bar=False, accelerator="cpu", callbacks=[Mode()])
    assert seen and all(seen)
    assert not [w for w in caught if "eval mode" in str(w.message)]


def test_quiet_training_lets_other_warnings_through():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_training():
            warnings.warn("the user's own warning", UserWarning, stacklevel=1)
            warnings.warn(
                "The number of training batches (3) is smaller than the logging interval "
                "Trainer(log_every_n_steps=10).",
                UserWarning,
                stacklevel=1,
            )
            logging.getLogger("lightning.pytorch").warning("a real Lightning warning")
    assert [str(w.message) for w in caught] == ["the user's own warning"]
    assert warnings.filters == before


def test_quiet_training_respects_an_explicit_debug_level():
    lightning = logging.getLogger("lightning.pytorch")
    old = lightning.level
    lightning.setLevel(logging.DEBUG)
    try:
        with quiet_training():
            assert lightning.level == logging.DEBUG
    finally:
        lightning.setLevel(old)


def test_progress_bar_shows_validation_loss(small, capfd):
    model = glassvi.model.LinearVI(small, n_latent=3)
    model.train(max_epochs=2, accelerator="cpu", check_val_every_n_epoch=1, train_size=0.8)
    out, _ = capfd.readouterr()
    assert "train_loss=" in out and "validation_loss=" in out


def test_progress_bar_kwargs_leave_user_choices_alone():
    kwargs = progress_bar_kwargs({})
    assert kwargs["simple_progress_bar"] is False
    assert isinstance(kwargs["callbacks"][-1], GlassProgressBar)
    assert progress_bar_kwargs({"enable_progress_bar": False}) == {"enable_progress_bar": False}
    assert progress_bar_kwargs({"simple_progress_bar": True}) == {"simple_progress_bar": True}
    own = GlassProgressBar()
    assert progress_bar_kwargs({"callbacks": [own]})["callbacks"] == [own]
