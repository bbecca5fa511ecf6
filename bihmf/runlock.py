"""One writer per run folder and per cache shard, whatever Snakemake's own lock says.

Snakemake locks a workflow folder, but ``snakemake --unlock`` (what its LockException
suggests) lifts that lock for everyone: a second Snakemake started then trains the same run
folder as the first, and each deletes the other's in-flight temporaries. So a training job
holds a lock of its own inside its run folder (``.writer.lock``) and an embed job one beside
its shard (``.<shard>.lock``), for as long as it writes. A second writer is refused at once
with the holder's PID and host.

The lock is ``flock`` on the file, so the kernel releases it when its holder dies, however it
dies (``kill -9``, the OOM killer): a lock left by a dead process is simply taken over, and the
taker logs whose it was. The PID written in the file only names the holder to a refused writer.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

RUN_LOCK = ".writer.lock"
F = TypeVar("F", bound=Callable[..., Any])


class HeldElsewhere(RuntimeError):
    """Another live process writes the same run folder or shard."""


def _holder(handle: Any) -> str:
    handle.seek(0)
    return handle.read().strip()


@contextmanager
def exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold ``lock`` while the block writes ``what``; refuse if a live process holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HeldElsewhere(
                f"{what} is being written by {_holder(handle) or 'another process'} (lock {lock}); two writers would "
                "destroy each other's files. Let it finish or stop it, then rerun."
            ) from None
        previous = _holder(handle)
        if previous:
            log.info("%s: taking over the lock of %s, which ended without releasing it", lock, previous)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def run_lock(folder: Path) -> AbstractContextManager[None]:
    """The lock of one run folder (inside it)."""
    return exclusive(Path(folder) / RUN_LOCK, f"run folder {folder}")


def shard_lock(shard: Path) -> AbstractContextManager[None]:
    """The lock of one cache shard (beside it; the shard itself is replaced atomically)."""
    shard = Path(shard)
    return exclusive(shard.parent / f".{shard.name}.lock", f"shard {shard}")


def holding(lock: Callable[[Path], Any], parameter: str) -> Callable[[F], F]:
    """Decorator: the function runs holding ``lock`` of its argument ``parameter`` (a path)."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock(Path(signature.bind(*args, **kwargs).arguments[parameter])):
                return function(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate
