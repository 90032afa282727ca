"""Batch prediction with Ray Data (`genre predict SOURCE --out FILE`): the driver in the `genre` process,
decoding in Ray Data's tasks, the model in a pool of Ray actors."""
