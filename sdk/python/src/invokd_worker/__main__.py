"""``invokd-worker MODULE:HANDLER``: runs a handler (or a predictor object with ``setup`` and
``predict``) found in a module, configured by flags or the environment."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

from .worker import start


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        sys.path.insert(0, str(path.parent.resolve()))
        module_name = path.stem
    else:
        sys.path.insert(0, ".")
    module = importlib.import_module(module_name)
    obj = getattr(module, attr or "handler")
    # A predictor class: one instance, as Cog makes.
    if isinstance(obj, type):
        obj = obj()
    return obj


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="invokd-worker", description=__doc__)
    p.add_argument("target", help="MODULE:HANDLER or path/to/file.py:HANDLER")
    p.add_argument("--api-url", help="the gateway's URL (INVOKD_API_URL)")
    p.add_argument("--token", help="the worker token (INVOKD_WORKER_TOKEN)")
    p.add_argument(
        "--models", action="append", help="a model id or prefix* (repeat; INVOKD_WORKER_MODELS)"
    )
    p.add_argument("--name", help="the worker's name (INVOKD_WORKER_NAME)")
    p.add_argument("--slots", type=int, help="jobs at once (INVOKD_WORKER_SLOTS)")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeat)")
    p.add_argument("--grace-seconds", type=float, help="INVOKD_WORKER_GRACE_SECONDS")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if not a.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    options: dict[str, Any] = {
        "api_url": a.api_url,
        "token": a.token,
        "models": a.models,
        "name": a.name,
        "slots": a.slots,
        "grace_seconds": a.grace_seconds,
        "labels": dict(kv.split("=", 1) for kv in a.label if "=" in kv) or None,
    }
    start(_load(a.target), **{k: v for k, v in options.items() if v is not None})


if __name__ == "__main__":
    main()
