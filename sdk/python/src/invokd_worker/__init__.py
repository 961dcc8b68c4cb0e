"""Write invokd workers in Python.

A worker pulls the jobs of the models it serves from an invokd gateway, runs them with your
handler, and hands back their outputs::

    from invokd_worker import start

    def handler(job):
        job.log("drawing")
        image = job.save_file(draw(job.input["prompt"]), "out.png")
        return {"images": [image], "seed": 0, "prompt": job.input["prompt"]}

    start(handler, models=["acme/painter"])

See the package's README for the whole API.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    GatewayError,
    GatewayUnreachable,
    JobCancelled,
    JobError,
    RetryableError,
)
from .job import Job  # noqa: E402
from .worker import ConfigError, Worker, start  # noqa: E402

__all__ = [
    "ConfigError",
    "GatewayError",
    "GatewayUnreachable",
    "Job",
    "JobCancelled",
    "JobError",
    "RetryableError",
    "Worker",
    "start",
    "__version__",
]
