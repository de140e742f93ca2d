"""The right to write one shard of a run: an advisory lock plus a lease with a heartbeat, so that
several processes, on one machine or on several sharing a folder, never write the same shard
(docs/cluster.md). Used by the run directory (bench/store.py: ``RunStore.lock_shard``)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench import BenchError
from bench.files import hostname, pid_alive

#: A live shard rewrites its lease's timestamp this often (a daemon thread).
LEASE_HEARTBEAT_S = 30.0
#: A lease written on another host whose timestamp is older than this is taken over (its writer
#: is presumed dead: a killed job, a lost node). Clocks of the hosts must agree to well within it.
LEASE_EXPIRY_S = 300.0


def _read_lease(path: Path) -> dict | None:
    """A lease's JSON (host, pid, rank, world, started) with its timestamp (mtime) as
    ``heartbeat``; None if it is gone. A torn or foreign lease reads as {}."""
    try:
        raw = path.read_bytes()[:4096]
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    data["heartbeat"] = mtime
    return data


def heartbeat_age(lease: dict, now: float | None = None) -> float:
    """Seconds between now and the lease's last heartbeat, either way: a heartbeat in the future
    (the writer's clock or the file server's runs ahead) ages as fast as one in the past, so a
    future mtime blocks the shard for at most LEASE_EXPIRY_S, never for the whole clock skew."""
    return abs((time.time() if now is None else now) - lease["heartbeat"])


def lease_is_live(lease: dict) -> bool:
    """Whether a lease's writer may still be running: on this host its pid exists; on another
    host its heartbeat is within LEASE_EXPIRY_S of now (heartbeat_age). A lease without
    host/pid (torn while it was written) counts as live until it is that old; a pid of 0 or
    below (no process) never does."""
    pid, host = lease.get("pid"), lease.get("host")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid <= 0:
        return False
    if not isinstance(pid, int) or not isinstance(host, str):
        return heartbeat_age(lease) < LEASE_EXPIRY_S
    if host == hostname():
        return pid_alive(pid)
    return heartbeat_age(lease) < LEASE_EXPIRY_S


def _holder(lease: dict) -> str:
    shard = (f"shard {lease['rank']}/{lease['world']}, " if isinstance(lease.get("rank"), int)
             and isinstance(lease.get("world"), int) else "")
    age = time.time() - lease["heartbeat"]
    when = f"heartbeat {age:.0f} s ago" if age >= 0 else f"heartbeat {-age:.0f} s in the future: clocks disagree"
    return f"process {lease.get('pid', '?')} on host {lease.get('host', '?')} ({shard}{when})"


class ShardLock:
    """The exclusive right to write one shard's records, held until :meth:`release` or the
    process ends, on a local disk or a folder shared by several machines (docs/cluster.md):

    1. ``rank-NNNNN.lock``: an advisory ``flock`` (local disks; NFSv4 and GPFS pass it to the
       server, Lustre only when mounted with ``-o flock``). A filesystem without locks skips it.
    2. ``rank-NNNNN.lease``: created with O_EXCL (atomic on every shared filesystem), holding the
       writer's host, pid, rank and world size; a daemon thread touches it every
       LEASE_HEARTBEAT_S. A lease whose writer is provably gone (same host and dead pid, or
       another host and no heartbeat for LEASE_EXPIRY_S) is taken over by an atomic rename.

    The same shard live anywhere is refused in one line naming its host and pid; so is a live
    shard of another world size writing the same run (its batches would be cut differently).
    """

    def __init__(self, folder: Path, rank: int, world: int, label: str):
        self.path = folder / f"rank-{rank:05d}.lock"
        self.lease_path = folder / f"rank-{rank:05d}.lease"
        self.rank, self.world, self.label = rank, world, label
        self._fd = None
        self._stop = None
        self._flock()
        try:
            self._take_lease()
            self._check_world(folder)
        except BaseException:
            self.release()
            raise
        self._start_heartbeat()

    # ---- the flock ---------------------------------------------------------------------------
    def _flock(self) -> None:
        import errno
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            lease = _read_lease(self.lease_path)
            who = _holder(lease) if lease and lease.get("pid") else f"process {holder}"
            raise BenchError(f"{self.label} is already being written by {who} (lock {self.path}); "
                             "wait for it to finish or stop it") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            os.close(fd)                      # no locks on this filesystem: the lease alone decides
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}@{hostname()}\n".encode())
        self._fd = fd

    # ---- the lease ---------------------------------------------------------------------------
    def _take_lease(self) -> None:
        content = json.dumps({"host": hostname(), "pid": os.getpid(), "rank": self.rank, "world": self.world,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode()
        for _attempt in range(5):
            try:
                fd = os.open(self.lease_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                lease = _read_lease(self.lease_path)
                if lease is None:
                    continue                  # released meanwhile: try again
                # holding the flock proves no process of this host holds the shard (a reused pid
                # of a killed writer must not keep its lease alive)
                ours_to_take = self._fd is not None and lease.get("host") == hostname()
                if not ours_to_take and lease_is_live(lease):
                    raise BenchError(f"{self.label} is already being written by {_holder(lease)} (lease "
                                     f"{self.lease_path}); wait for it to finish or stop it; a lease of a dead "
                                     f"process on another host expires {LEASE_EXPIRY_S:.0f} s after its last "
                                     "heartbeat") from None
                stale = self.lease_path.with_name(f".{self.lease_path.name}.{os.getpid()}@{hostname()}.stale")
                try:
                    os.rename(self.lease_path, stale)      # atomic: one taker wins
                except FileNotFoundError:
                    continue
                stale.unlink(missing_ok=True)
                continue
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._content = content
            return
        raise BenchError(f"{self.label}: could not take the lease {self.lease_path} (other processes keep "
                         "taking it); run one process per shard")

    def _owns_lease(self) -> bool:
        try:
            return self.lease_path.read_bytes() == self._content
        except OSError:
            return False

    def _check_world(self, folder: Path) -> None:
        for path in sorted(folder.glob("rank-*.lease")):
            if path == self.lease_path:
                continue
            lease = _read_lease(path)
            if lease and isinstance(lease.get("world"), int) and lease["world"] != self.world and lease_is_live(lease):
                raise BenchError(f"{self.label} cannot start: {_holder(lease)} writes the same run with "
                                 f"{lease['world']} shards, this one with {self.world}; every shard of one run "
                                 f"needs the same --shard I/N (N={lease['world']}), or wait for it to finish")

    def _start_heartbeat(self) -> None:
        import threading

        self._stop = threading.Event()

        def beat(stop=self._stop):
            while not stop.wait(LEASE_HEARTBEAT_S):
                if not self._owns_lease():
                    print(f"warning: {self.label}: the lease {self.lease_path} was taken over by another "
                          "process (this one was presumed dead)", file=sys.stderr)
                    return
                try:
                    os.utime(self.lease_path)
                except OSError:
                    pass

        threading.Thread(target=beat, name=f"lease-{self.rank}", daemon=True).start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if getattr(self, "_content", None) is not None:
            if self._owns_lease():
                self.lease_path.unlink(missing_ok=True)
            self._content = None
        if self._fd is not None:
            os.close(self._fd)          # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
