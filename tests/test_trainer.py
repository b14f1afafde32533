"""The training loop (npgpt.trainer): the NaN guard, Ctrl-C, the log."""

import os
import signal

import numpy as np
import pytest

from npgpt import GPT, GPTConfig
from npgpt import checkpoint as ckpt_io
from npgpt.optim import AdamW, Constant
from npgpt.trainer import RunLog, Trainer, TrainingDiverged, graceful_interrupt, read_log
from tests.helpers import interrupt_at


# -- the NaN guard ----------------------------------------------------------------------------

def tiny_trainer(out, model=None, **kw):
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = model or GPT(cfg, seed=0)
    data = np.random.default_rng(0).integers(0, 10, 500)

    def batch_fn(rng):
        o = rng.integers(0, len(data) - 9, 4)[:, None] + np.arange(8)
        return data[o], data[o + 1]
    opt = AdamW(model.parameters(), lr=1e-2)
    return Trainer(model, opt, batch_fn, schedule=Constant(1e-2), out_dir=out, progress=False, **kw)


def test_a_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    snapshots = {}

    def poison(trainer, rec):
        snapshots[rec["step"]] = trainer.model.state_dict()
        if rec["step"] == 5:
            trainer.model.h[0].mlp.c_fc.weight.data[0, 0] = np.nan
    trainer = tiny_trainer(tmp_path, max_iters=20, checkpoint_interval=2, on_step=poison)
    with pytest.raises(TrainingDiverged, match=r"step 6: loss is nan.*last good checkpoint is kept"):
        trainer.run()
    ck = ckpt_io.load(tmp_path / "ckpt.safetensors")
    assert ck.meta["step"] == 4
    assert all(np.array_equal(ck.model_state[k], v) for k, v in snapshots[4].items())
    assert read_log(tmp_path / "log.jsonl")[-1]["error"].startswith("step 6: loss is nan")


def test_a_bad_parameter_is_never_saved(tmp_path):
    def poison(trainer, rec):
        if rec["step"] == 4:       # right before the checkpoint of step 4
            trainer.model.wte.weight.data[1, 1] = np.inf
    trainer = tiny_trainer(tmp_path, max_iters=20, checkpoint_interval=2, on_step=poison)
    with pytest.raises(TrainingDiverged, match=r"step 4: parameter wte.weight holds NaN or infinite"):
        trainer.run()
    assert ckpt_io.load(tmp_path / "ckpt.safetensors").meta["step"] == 2


def test_an_infinite_gradient_norm_stops_before_the_update(tmp_path):
    class Exploding(GPT):
        def backward(self, dlogits=None):
            super().backward(dlogits)
            if trainer.step + 1 == 3:
                self.ln_f.bias.grad[0] = np.inf
    model = Exploding(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    trainer = tiny_trainer(tmp_path, model=model, max_iters=20, checkpoint_interval=1)
    with pytest.raises(TrainingDiverged, match=r"step 3: gradient norm is inf"):
        trainer.run()
    ck = ckpt_io.load(tmp_path / "ckpt.safetensors")
    assert ck.meta["step"] == 2
    assert np.array_equal(ck.model_state["ln_f.bias"], model.ln_f.bias.data)   # no update happened


# -- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_finishes_the_step_and_saves(tmp_path):
    trainer = tiny_trainer(tmp_path, max_iters=50, checkpoint_interval=100, on_step=interrupt_at(3))
    result = trainer.run()
    assert result.interrupted and result.step == 3
    assert ckpt_io.load(tmp_path / "ckpt.safetensors").meta["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_raises_at_once():
    with graceful_interrupt() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag["requested"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_runlog_resume_drops_the_steps_that_will_be_recomputed(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RunLog(path, total=6, progress=False)
    for s in range(1, 6):
        log.record({"step": s, "loss": 1.0 / s, "tokens_per_s": 1.0})
    log.close()
    RunLog(path, total=6, start_step=3, progress=False).close()
    assert [r["step"] for r in read_log(path)] == [1, 2, 3]


class SignalledInTheCollective:
    """A one-process stand-in for a data-parallel group (npgpt.dist.DataParallel): `any` answers
    from the flag as it was when the call began, while Ctrl-C arrives during the call at step 3,
    as it does when a process waits in MPI and Python runs the handler as the call returns."""

    writer = True

    def __init__(self, trainer_step):
        self.trainer_step, self.sent = trainer_step, False

    def any(self, flag: bool) -> bool:
        if self.trainer_step() == 3 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)     # the handler runs here, after flag was read
        return flag

    def sync_gradients(self, optimizer, batch):
        pass                                        # one process: its gradient is the sum


def test_a_signal_during_the_collective_is_not_lost(tmp_path):
    """The answer of the collective is not written back over the flag: a signal handled while a
    process waited in it stops the run at the next step (it was lost, and under mpiexec, with
    every process losing its own, Ctrl-C never stopped the run)."""
    holder = {}
    group = SignalledInTheCollective(lambda: holder["trainer"].step)
    holder["trainer"] = trainer = tiny_trainer(tmp_path, max_iters=30, checkpoint_interval=100,
                                               parallel=group)
    result = trainer.run()
    assert group.sent and result.interrupted and result.step == 4, result.step
    assert ckpt_io.load(tmp_path / "ckpt.safetensors").meta["step"] == 4
