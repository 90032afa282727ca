"""The pyarrow filesystems that Ray Tune and Ray Train write a sweep's run storage through.

They are built in the sweep driver and unpickled in each trial's actor and its Train workers.
"""
