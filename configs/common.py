"""Trainer settings shared by the training configs."""

import ml_collections


def add_trainer_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.remat = False
    c.seed = 0
    c.num_steps = 0  # > 0 overrides epochs
    c.eval_zero_shot = True  # zero-shot rows shown next to the trained ones
    c.eval_every = 0  # > 0: the ID test set's accuracy every that many steps of training (README, Training)
    c.eval_unit = "step"  # "epoch": eval_every counts epochs instead, as the released SOT-GLP code's eval_freq
    c.loss_scale = "none"  # "dynamic": float16 training's loss scaled as PyTorch's GradScaler (README, Training)
    c.log_every = 50
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.progress_every = 30.0
    c.tensorboard = True
    return c
