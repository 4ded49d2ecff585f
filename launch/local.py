r"""Runs N local processes of one Python job as a multi-process JAX runtime on this machine.

  python launch/local.py --num_processes=2 -- -m omni_jax.main --config=configs/tiny.py \
      --workdir=/tmp/run
  python launch/local.py --num_processes=2 --devices_per_process=4 -- -m omni_jax.main ...

Everything after `--` is the command line of `python` (a `-m module` or a script path and
its arguments). Process i gets these arguments appended, which `omni_jax.main` (or any job
whose `--config` is an ml_collections config flag) turns into `jax.distributed.initialize`:

  --config.distributed.initialize=True
  --config.distributed.coordinator_address=127.0.0.1:PORT   (a free port, or --port)
  --config.distributed.num_processes=N
  --config.distributed.process_id=i

and runs with JAX_PLATFORMS=cpu (the processes exchange collectives over gloo) and, with
--devices_per_process=D, D fake CPU devices each (XLA_FLAGS). This is the multi-host code
path, exercised on one machine: every process feeds its own rows of the global batch.

Each output line of process i is printed as `[i] line`. The launcher waits for all of them:
if one exits non-zero, the others are stopped and the launcher exits with that status (a
process killed by signal s counts as 128 + s). SIGTERM or SIGINT sent to the launcher is
forwarded to every process (so a preempted launcher checkpoints like a preempted job).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence

_GRACE_S = 10.0  # how long a stopped process may take to exit before it is killed
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_args(port: int, num_processes: int, process_id: int) -> list[str]:
    return ["--config.distributed.initialize=True",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            f"--config.distributed.num_processes={num_processes}",
            f"--config.distributed.process_id={process_id}"]


def process_env(devices_per_process: int | None, base: dict | None = None) -> dict:
    """The environment of every process: CPU platform, optionally D fake devices."""
    env = dict(os.environ if base is None else base)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are printed, not at exit
    if devices_per_process:
        # Replace a device count inherited from the caller rather than append a second one.
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)]
        env["XLA_FLAGS"] = " ".join(flags + [f"{_DEVICE_FLAG}={devices_per_process}"])
    return env


def _pump(index: int, stream, lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            sys.stdout.write(f"[{index}] {line}" if line.endswith("\n") else
                             f"[{index}] {line}\n")
            sys.stdout.flush()
    stream.close()


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM to every live process, SIGKILL to those still alive after the grace period."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.terminate()
    deadline = time.monotonic() + _GRACE_S
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(command: Sequence[str], num_processes: int, *, devices_per_process: int | None = None,
           port: int | None = None, timeout_s: float | None = None,
           python: str = sys.executable) -> int:
    """Starts the processes, relays their output, returns the exit status (see above)."""
    if num_processes < 1:
        raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
    port = port or free_port()
    env = process_env(devices_per_process)
    lock = threading.Lock()
    procs, pumps = [], []
    for i in range(num_processes):
        proc = subprocess.Popen(
            [python, *command, *distributed_args(port, num_processes, i)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            errors="replace")
        procs.append(proc)
        pumps.append(threading.Thread(target=_pump, args=(i, proc.stdout, lock), daemon=True))
        pumps[-1].start()

    def forward(signum, frame):
        del frame
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:  # one failed: the others would wait forever on its collectives
                status = _exit_status(failed[0].returncode)
                print(f"[launch] process {procs.index(failed[0])} exited with status "
                      f"{status}; stopping the others", file=sys.stderr, flush=True)
                _stop(procs)
                break
            if deadline is not None and time.monotonic() > deadline:
                print(f"[launch] timed out after {timeout_s} s; stopping every process",
                      file=sys.stderr, flush=True)
                _stop(procs)
                status = 124
                break
            time.sleep(0.1)
        else:
            status = next((_exit_status(p.returncode) for p in procs if p.returncode), 0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop(procs)
    for t in pumps:
        t.join(timeout=5)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description="N local processes of one JAX job.")
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=None,
                        help="fake CPU devices per process (XLA_FLAGS); default: one")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (free one)")
    parser.add_argument("--timeout_s", type=float, default=None,
                        help="stop every process (status 124) after this many seconds")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("nothing to run after '--'")
    return launch(command, args.num_processes, devices_per_process=args.devices_per_process,
                  port=args.port, timeout_s=args.timeout_s)


if __name__ == "__main__":
    sys.exit(main())
