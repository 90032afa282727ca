"""What runs a model: the training loop in Ray Train's workers, and the forward pass and
checkpoints that `genre predict` and `genre evaluate` use too.

`fit.py`, the loop, is plain PyTorch with no Ray; `worker.py` is the one adapter that gives it
Ray Train's context, data and reports.
"""
