"""The Ray Serve deployment of `genre serve`: an audio file POSTed to `/` in, its prediction as
`genre predict --json` prints it out, concurrent requests batched into one `Predictor.predict_files` call;
runs in the Serve replica actors."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from genre.predict import Prediction, Predictor
from genre.serve.uploads import RequestRefused, Upload, error_response, name_the_upload, receive_upload
from genre.train.checkpoints import CheckpointBytes

# How many requests the batch that answered a request held: a client (and the tests) can see batching.
BATCH_SIZE_HEADER = "X-Genre-Batch-Size"
# The status of a file that is audio but gets no prediction: shorter than one window, or one the model
# gives no finite probabilities for (Prediction.error says which).
NO_PREDICTION_STATUS = 422
# Ray Serve's logger: its lines go to the replica's log file with the request's id.
logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ReplicaSetup:
    """What every replica is built from: the checkpoint's bytes, since a replica may run on a node without
    the run folder, and how it takes requests."""

    checkpoint: CheckpointBytes
    max_batch_size: int
    batch_wait_s: float
    max_body_bytes: int


@dataclass(frozen=True)
class ReplicaModel:
    """The model a replica serves, for the `genre` process's ready line."""

    name: str
    checkpoint: str
    device: str


@serve.deployment
class GenreClassifier:
    """One replica: a Predictor on this replica's GPU if Ray gave it one, else on the CPU."""

    def __init__(self, setup: ReplicaSetup) -> None:
        device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray's CUDA_VISIBLE_DEVICES shows its GPU as cuda:0
        self.predictor = Predictor(setup.checkpoint, device)
        self.max_body_bytes = setup.max_body_bytes
        self.uploads = Path(tempfile.mkdtemp(prefix="genre-serve-"))
        # The options are the command's: @serve.batch takes constants, its setters take them per replica.
        self.predict_batch.set_max_batch_size(setup.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(setup.batch_wait_s)

    async def describe(self) -> ReplicaModel:
        loaded = self.predictor.loaded
        return ReplicaModel(loaded.name, loaded.checkpoint, str(loaded.device))

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            upload = await receive_upload(request, self.uploads, self.max_body_bytes)
        except RequestRefused as refused:
            return refused.response()
        except Exception as error:  # the replica's own trouble (its disk full): this request's 500 only
            logger.exception("receiving a request failed")
            return error_response(
                500, f"the server could not receive this file: {type(error).__name__}: {error}"
            )
        try:
            prediction, batch_size = await self.predict_batch(upload.path)
            return self._answer(upload, prediction, batch_size)
        except Exception as error:
            # One request's failure (the whole batch's, if the model raised) is that request's 500; the
            # replica goes on serving.
            logger.exception("prediction failed")
            reason = name_the_upload(f"{type(error).__name__}: {error}", upload.path, upload.name)
            return error_response(500, f"the server could not predict this file: {reason}")
        finally:
            upload.path.unlink(missing_ok=True)

    @serve.batch
    async def predict_batch(self, paths: list[Path]) -> list[tuple[Prediction, int]]:
        """The batch's files through one predict_files call, whose windows share forward passes.

        In a thread: the replica's event loop meanwhile takes the next batch's requests.
        """
        predictions = await asyncio.to_thread(lambda: list(self.predictor.predict_files(paths)))
        return [(prediction, len(paths)) for prediction in predictions]

    def _answer(self, upload: Upload, prediction: Prediction, batch_size: int) -> JSONResponse:
        headers = {BATCH_SIZE_HEADER: str(batch_size)}
        if prediction.error:
            message = name_the_upload(prediction.error, upload.path, upload.name)
            return error_response(NO_PREDICTION_STATUS, message, headers)
        answer = {**prediction.to_dict(), "path": upload.name, "model": self.predictor.model_name}
        return JSONResponse(answer, headers=headers)

    def __del__(self) -> None:
        # Serve calls it when it stops the replica; a replica whose model did not load has no folder.
        if hasattr(self, "uploads"):
            shutil.rmtree(self.uploads, ignore_errors=True)
