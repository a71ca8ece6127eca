"""`python tests/fork_server.py MODULE...`: imports the MODULEs once, then runs commands
(`python -m module args...`) in forked children, so that a child starts in a fraction of a second
instead of the seconds Python takes to import torch, transformers and hydra; a test can then
kill and restart a command many times (tests/killing.py). Each child is a real process: SIGKILL
stops it wherever it is, as it would stop `python -m module`.

One JSON line each way on stdin/stdout:
    {"run": [module, *args], "log": path}  ->  {"pid": pid}   (the child's stdout and stderr go to log;
                                                               with "err": path, its stderr goes there)
    {"wait": pid, "timeout": seconds}      ->  {"exit": status, or null while it runs; -9 after a SIGKILL}
"""

import importlib
import json
import os
import runpy
import sys
import time
import traceback


def run_child(argv: list[str], log: str, err: str | None = None) -> None:
    for path, fds in ([(log, (1, 2))] if err is None else [(log, (1,)), (err, (2,))]):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for target in fds:
            os.dup2(fd, target)
    sys.argv = list(argv)
    code = 0
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:  # noqa: BLE001  (reported in the log, as python -m would)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def main() -> None:
    for module in sys.argv[1:]:
        importlib.import_module(module)
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            pid = os.fork()
            if pid == 0:
                run_child(request["run"], request["log"], request.get("err"))
            reply = {"pid": pid}
        else:
            reply = {"exit": wait(request["wait"], request["timeout"])}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
