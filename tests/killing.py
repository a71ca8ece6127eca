"""Kill a command at random moments and resume it until it finishes: the harness of
tests/test_kill_anywhere.py, for any entry point that resumes (experiments.run, experiments.bench,
the trainers). Commands start as forked children of one server process that imported the
entry points once (tests/fork_server.py), or, with PlainLauncher, as plain `python -m` processes."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}


class ForkLauncher:
    """Starts commands as children of tests/fork_server.py, which imported `modules` once."""

    def __init__(self, *modules: str):
        self.server = subprocess.Popen([sys.executable, str(REPO / "tests" / "fork_server.py"), *modules], cwd=REPO,
                                       env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, request: dict) -> dict:
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        return json.loads(self.server.stdout.readline())

    def start(self, cmd: list[str], log: Path, err: Path | None = None) -> int:
        return self._ask({"run": cmd, "log": str(log), **({"err": str(err)} if err else {})})["pid"]

    def wait(self, pid: int, timeout: float) -> int | None:
        """The exit status, or None if it still runs after `timeout` seconds."""
        return self._ask({"wait": pid, "timeout": timeout})["exit"]

    def run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        """`cmd` (module, *args) to its end, as subprocess.run([python, "-m", *cmd], capture_output=True,
        text=True) would run it; past `timeout` seconds it is killed and TimeoutExpired raised."""
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            pid = self.start(cmd, out, err)
            status = self.wait(pid, timeout)
            if status is None:
                os.kill(pid, signal.SIGKILL)
                self.wait(pid, 60)
                raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(cmd, status, out.read_text(), err.read_text())

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


class PlainLauncher:
    """Starts commands as `python -m module args...` (slower: every start imports everything)."""

    def __init__(self):
        self.processes: dict[int, subprocess.Popen] = {}

    def start(self, cmd: list[str], log: Path) -> int:
        with open(log, "a") as out:
            process = subprocess.Popen([sys.executable, "-m", *cmd], cwd=REPO, env=ENV, stdout=out, stderr=out)
        self.processes[process.pid] = process
        return process.pid

    def wait(self, pid: int, timeout: float) -> int | None:
        try:
            return self.processes[pid].wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        pass


def kill_and_resume(cmd: list[str], rng: random.Random, kills: int, span: float, launcher, log: Path,
                    timeout: float = 300) -> int:
    """Run `cmd` (module, *args) and SIGKILL it at a moment drawn uniformly from [0, span) seconds
    after its start, again and again (each rerun resumes), `kills` times at most; then let the
    last run finish. Returns how many kills landed (fewer when a run finished first). A run
    that ends with an error fails the test, its log attached."""
    landed = 0
    while True:
        pid = launcher.start(cmd, log)
        if landed < kills:
            status = launcher.wait(pid, rng.uniform(0, span))
            if status is None:
                os.kill(pid, signal.SIGKILL)
                status = launcher.wait(pid, 60)
                if status == -signal.SIGKILL:
                    landed += 1
                    continue  # else it finished between the wait and the kill: judged below
        else:
            status = launcher.wait(pid, timeout)
        assert status == 0, f"{' '.join(cmd)} exited with {status}:\n{log.read_text()[-3000:]}"
        return landed
