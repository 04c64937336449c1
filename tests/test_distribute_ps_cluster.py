"""Parameter-server training on local clusters: a chief, workers and ps tasks on localhost.

Each task runs tests/ps_worker.py with its own TF_CONFIG (free ports): the
worker and ps tasks serve (make_parameter_server_strategy) and exit once the
chief is gone; the chief trains a table sharded over the ps tasks, and a
Dense trunk whose variables live on them, with a ClusterCoordinator and
writes out/result.json. One test kills and restarts a worker (every step
applied once by every shard and trunk group), one kills the chief and
restarts it from its checkpoint (it continues like a run never interrupted).
Every process is killed at the time limit, so a stuck cluster fails the test
instead of hanging it.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import tf_sampled as tfs

TESTS = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
           PYTHONPATH=os.pathsep.join([TESTS, os.path.dirname(TESTS)]))
PROGRAM = [sys.executable, "-X", "faulthandler", os.path.join(TESTS, "ps_worker.py")]
TIMEOUT_S = 150


class Task:
    """One process of the cluster, its output collected line by line."""

    def __init__(self, config, options):
        self.name = "{type}:{index}".format(**json.loads(config)["task"])
        self.proc = subprocess.Popen(PROGRAM + [json.dumps(options)],
                                     env=dict(ENV, TF_CONFIG=config), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text, deadline):
        """Blocks until a line holds `text`; fails the test at the deadline or on exit."""
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        pytest.fail(f"{self.name} never printed {text!r} (exit {self.proc.poll()}):\n"
                    + "".join(self.lines[-40:]), pytrace=False)

    def wait_exit(self, deadline):
        """The exit status; at the deadline dumps the task's stacks and fails with its output."""
        try:
            self.proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # ps_worker.py dumps its stacks
            time.sleep(2)
            self.kill()
            pytest.fail(f"{self.name} did not finish in time:\n" + "".join(self.lines[-80:]),
                        pytrace=False)
        self.reader.join()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join()


@pytest.fixture(name="cluster")
def _cluster():
    """Starts tasks; kills whatever is left at the end."""
    tasks = []

    def start(config, options):
        tasks.append(Task(config, options))
        return tasks[-1]

    yield start
    for task in tasks:
        task.kill()


@pytest.mark.slow  # a 5-process cluster, a worker killed and restarted: 20-30 s on 2 cores
def test_killed_worker_is_retried_and_every_step_is_applied_once(tmp_path, cluster):
    steps, pause = 240, 120
    options = {"steps": steps, "out": str(tmp_path), "log_every": 10, "batch": 64,
               "pause_at_step": pause, "go_file": str(tmp_path / "go"), "chief_gone_s": 2,
               "trunk": True}
    configs = tfs.distribute.local_cluster(2, num_ps=2)  # chief, worker 0, 1, ps 0, 1
    deadline = time.monotonic() + TIMEOUT_S
    chief, worker0, worker1, *servers = [cluster(c, options) for c in configs]

    # SIGKILL worker 1 mid-training; the coordinator re-runs its steps on worker 0.
    chief.wait_for("step 40/", deadline)
    worker1.kill()
    assert worker1.proc.returncode == -signal.SIGKILL
    restarted = cluster(configs[2], options)
    chief.wait_for("paused", deadline)
    restarted.wait_for("serving at", deadline)
    # The coordinator reconnects to the restarted worker (TensorFlow's recovery
    # needs the other tasks alive meanwhile). Then worker 0 dies for good: the
    # restarted worker 1 finishes the run alone.
    chief.wait_for("Worker /job:worker/replica:0/task:1 has been recovered", deadline)
    (tmp_path / "go").touch()
    chief.wait_for(f"step {pause + 20}/", deadline)
    worker0.kill()

    returncode = chief.wait_exit(deadline)
    log = "".join(chief.lines)
    assert returncode == 0, log[-4000:]
    with open(tmp_path / "result.json", encoding="utf-8") as f:
        result = json.load(f)
    assert result["step"] == steps
    assert [r["step"] for r in result["history"]["train"]] == list(range(10, steps + 1, 10))
    # Every shard and every server's part of the trunk applied every step
    # exactly once (re-runs it had applied were refused: repeats_skipped), on
    # its own parameter server.
    assert result["applied"] == [steps, steps], result
    assert result["trunk"]["applied"] == [steps, steps], result
    assert result["applied_steps"] == [list(range(steps))] * 4
    assert result["devices"] == ["/job:ps/replica:0/task:0/device:CPU:0",
                                 "/job:ps/replica:0/task:1/device:CPU:0"]
    assert result["tree_devices"] == result["devices"]
    assert result["trunk_devices"] == result["devices"]
    # The trunk was trained: every weight moved, and the loss fell.
    assert result["trunk_moved"] == [True] * 4
    assert result["after"]["loss"] < result["before"]["loss"] - 1.0, result
    # The coordinator saw each worker fail.
    for task in ("/job:worker/replica:0/task:1", "/job:worker/replica:0/task:0"):
        assert f"Worker {task} failed with UnavailableError" in log, log[-4000:]
    # The servers left once the chief was gone.
    for server in servers + [restarted]:
        server.proc.wait(timeout=30)
        assert server.proc.returncode == 0, "".join(server.lines[-20:])
    print(f"repeats skipped per shard: {result['repeats_skipped']}, per trunk group: "
          f"{result['trunk']['repeats_skipped']}; closures the coordinator "
          f"put back: {log.count('Putting back a closure after it failed')}")


@pytest.mark.slow  # a 3-process cluster whose chief is killed and restarted: 16-25 s
def test_a_restarted_chief_continues_from_its_checkpoint_like_the_uninterrupted_run(
        tmp_path, cluster):
    steps, pause = 40, 20
    # The servers outlive the killed chief (chief_gone_s) and serve the new one.
    options = {"steps": steps, "out": str(tmp_path), "log_every": 5, "trunk": True,
               "num_shards": 2,
               "checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every": 10,
               "chief_gone_s": 60, "pause_at_step": pause, "go_file": str(tmp_path / "never")}
    configs = tfs.distribute.local_cluster(1, num_ps=1)  # chief, worker 0, ps 0 (2 shards)
    deadline = time.monotonic() + TIMEOUT_S
    chief, *servers = [cluster(c, options) for c in configs]
    chief.wait_for("paused", deadline)
    chief.kill()
    restarted = cluster(configs[0], dict(options, pause_at_step=None, reference=True))
    returncode = restarted.wait_exit(deadline)
    log = "".join(restarted.lines)
    assert returncode == 0, log[-4000:]
    assert f"restored step {pause} from {tmp_path / 'ckpt'}/ckpt-{pause}" in log, log[-4000:]
    with open(tmp_path / "result.json", encoding="utf-8") as f:
        result = json.load(f)
    assert result["step"] == steps and result["restored_from"].endswith(f"ckpt-{pause}")
    # The restored run's steps 21-40 are those of a run that was never
    # interrupted (trained in one process: the same batches, negatives and
    # updates, to float tolerance).
    ours = {r["step"]: r["loss"] for r in result["history"]["train"]}
    theirs = {r["step"]: r["loss"] for r in result["reference"]}
    assert sorted(ours) == list(range(pause + 5, steps + 1, 5))
    for step, loss in ours.items():
        assert loss == pytest.approx(theirs[step], rel=1e-4), (step, ours, theirs)
    assert result["max_difference"] < 1e-4, result
    # Each update group applied steps 0-39 once: 0-19 restored, 20-39 here.
    assert result["applied_steps"] == [list(range(steps))] * 3
    assert result["applied"] == [steps, steps] and result["trunk"]["applied"] == [steps]
    assert result["trunk_moved"] == [True] * 4


@pytest.mark.slow  # one process, about 8 s
def test_a_server_without_its_chief_exits_with_a_cluster_error(tmp_path, cluster):
    configs = tfs.distribute.local_cluster(1, num_ps=1)
    start = time.monotonic()
    ps = cluster(configs[2], {"steps": 1, "out": str(tmp_path), "startup_timeout_s": 1})
    returncode = ps.wait_exit(start + 60)
    log = "".join(ps.lines)
    assert returncode == 1, log
    assert "ClusterError: ps:0 waited 1 s for the chief (localhost:" in log, log
    assert time.monotonic() - start < 60
