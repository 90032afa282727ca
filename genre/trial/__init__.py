"""A Ray Tune trial's actor: one Ray Train run of one model and configuration, per trial.

One such actor runs per trial, beside the sweep driver, so it imports no torch at module level
(each trial would otherwise spend seconds importing it); the training itself runs in genre.train.
"""
