"""genre's tests.

Before any test module imports Ray, as `genre` does for the Ray it starts: the test session's Ray
listens on 127.0.0.1 only (see data_pipeline/loopback.py).
"""

from data_pipeline.loopback import keep_local_ray_on_loopback

keep_local_ray_on_loopback()
