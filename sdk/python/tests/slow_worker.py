"""A worker process for the signal tests: ``quick`` jobs finish at once, others wait for their
cancel (or the end of the grace period). Configured by the environment."""

import sys
import time

from invokd_worker import Job, start


def handler(job: Job) -> dict:
    # One write for the whole line: two jobs' prints of a text and its newline interleave.
    sys.stdout.write(f"started {job.id}\n")
    sys.stdout.flush()
    if job.input["prompt"] == "no images":
        return {"seed": 3}  # not an image model's output: the gateway's check refuses it
    if job.input["prompt"] == "quick":
        time.sleep(0.3)
        return {"seed": 1}
    job.log("waiting for the cancel")
    job.progress(1, 2, message="waiting")
    job.cancel_event.wait(60)
    return {"seed": 2}


if __name__ == "__main__":
    start(handler)


class Predictor:
    """The same, in the manner of a Cog predictor: setup() once, predict(job) per job."""

    def setup(self) -> None:
        self.ready = True
        print("setup done", flush=True)

    def predict(self, job: Job) -> dict:
        assert self.ready
        return handler(job)
