"""Training core: state, optimizer and EMA, the per-device step, data parallelism."""

from genode.train.distributed import ProcessInfo, initialize, process_info
from genode.train.optim import (DECAYS, OPTIMIZERS, ema_decay_from_half_life,
                                ema_decay_schedule, learning_rate_of, make_optimizer,
                                make_schedule, update_ema)
from genode.train.parallel import MODES, DataParallel
from genode.train.state import TrainState, create_train_state
from genode.train.step import make_train_step

__all__ = [
    "DECAYS",
    "MODES",
    "OPTIMIZERS",
    "DataParallel",
    "ProcessInfo",
    "TrainState",
    "create_train_state",
    "ema_decay_from_half_life",
    "ema_decay_schedule",
    "initialize",
    "learning_rate_of",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "process_info",
    "update_ema",
]
