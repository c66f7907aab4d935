"""What a task process sees, for tests/pipelines/test_forkserver.py: ``python -m
tests.pipelines.forkserver_probe OUT_JSON`` (fresh, or forked by the fork server) writes its
environment, directory, process group, umask, signal handling and argv to OUT_JSON, prints a line on
stdout and on stderr, then exits with ``$PROBE_ACTION`` (a number; ``sleep``: waits to be signalled;
``sigkill``: fills a scratch directory as a training does, prints where, and SIGKILLs itself)."""

import json
import os
import signal
import sys
import tempfile
import time

# Preloaded by a fork server with $PROBE_CRASH_IN_FORK_SERVER set, this import ends the server (a
# crash, the OOM killer) before it reads its first request; anywhere else it is harmless.
if os.environ.get("PROBE_CRASH_IN_FORK_SERVER") and sys.argv[0].endswith("forkserver.py"):
    os._exit(3)


def main() -> int:
    out, action = sys.argv[1], os.environ["PROBE_ACTION"]
    umask = os.umask(0)
    os.umask(umask)
    seen = {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "umask": umask,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "tempdir": tempfile.gettempdir(),
        "argv": sys.argv,
        "name": __name__,
        "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "stdin": os.read(0, 16).decode(),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(seen, f)
    print(f"probe {action}: stdout", flush=True)
    print(f"probe {action}: stderr", file=sys.stderr, flush=True)
    if action == "sleep":
        time.sleep(300)
    if action == "sigkill":
        scratch = tempfile.mkdtemp(prefix="vrft-sft-")
        with open(os.path.join(scratch, "checkpoint.bin"), "wb") as f:
            f.write(b"x" * 1_000_000)
        print(scratch, os.environ["VRFT_WORK_DIR"], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return int(action) if action.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())
