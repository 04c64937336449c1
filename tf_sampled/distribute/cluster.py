"""The cluster a training process belongs to: TF_CONFIG, start-up and local clusters.

TensorFlow's strategies read the cluster from the TF_CONFIG
environment variable and, given a TF_CONFIG it cannot use, fails late and
obscurely or waits forever: a task that is missing from the cluster, a peer
that never starts or a port another process holds make it block inside
TensorFlow's start-up (measured: SIGTERM does not end such a process). This
module checks TF_CONFIG first (`parse_tf_config`: a ValueError naming the
problem), waits for the peers with a time limit before TensorFlow connects to
them (`wait_for_peers`), and creates the strategy with time limits on its
collective operations (`make_strategy`). `run_local_cluster` starts a
cluster of processes on this machine (tests, examples, benchmarks). The same
checks serve parameter-server clusters (`parse_tf_config(...,
parameter_servers=True)`: a "chief" that coordinates, "worker" and "ps"
tasks), whose strategy `tf_sampled.distribute.parameter_server` creates.
"""
import dataclasses
import faulthandler
import json
import os
import socket
import subprocess
import threading
import time

import tensorflow as tf

# The jobs MultiWorkerMirroredStrategy trains with; "ps" (ParameterServerStrategy)
# and "evaluator" (a side-car evaluator) are not part of it.
SUPPORTED_JOBS = ("chief", "worker")
# The jobs of a ParameterServerStrategy cluster: the chief runs the training
# program (the ClusterCoordinator), workers run the steps, "ps" tasks hold
# the variables.
PARAMETER_SERVER_JOBS = ("chief", "worker", "ps")
DEFAULT_COLLECTIVE_TIMEOUT_S = 300.0
DEFAULT_STARTUP_TIMEOUT_S = 300.0
_PROBE_INTERVAL_S = 0.2


class ClusterError(RuntimeError):
    """The cluster failed at run time: a peer did not start, died or stalled."""


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """A validated TF_CONFIG: the cluster and this process's task in it.

    Attributes:
      cluster: job name -> tuple of "host:port" addresses ("chief" and/or
        "worker"; and "ps" in a parameter-server cluster).
      task_type: this process's job: "chief", "worker" or "ps".
      task_index: this process's index in its job.
      rpc_layer: "grpc".
    """

    cluster: dict
    task_type: str
    task_index: int
    rpc_layer: str = "grpc"

    @property
    def tasks(self):
        """[(job, index, address)] of the training processes in TensorFlow's worker
        order (the chief first); parameter servers ("ps") come last."""
        return [(job, i, address) for job in PARAMETER_SERVER_JOBS
                for i, address in enumerate(self.cluster.get(job, ()))]

    @property
    def num_workers(self):
        """Processes that run steps: the chief counts as one, parameter servers do not."""
        return sum(len(self.cluster.get(job, ())) for job in SUPPORTED_JOBS)

    @property
    def num_ps(self):
        """Parameter-server tasks (0 outside a parameter-server cluster)."""
        return len(self.cluster.get("ps", ()))

    @property
    def worker_index(self):
        """This task's position in `tasks` (TensorFlow's id in the cluster)."""
        return [(job, i) for job, i, _ in self.tasks].index((self.task_type, self.task_index))

    @property
    def is_chief(self):
        """The task that writes checkpoints: the chief, or worker 0 without one."""
        return self.worker_index == 0

    @property
    def address(self):
        """This task's "host:port"."""
        return self.cluster[self.task_type][self.task_index]

    @property
    def task_name(self):
        """"worker:1" style name of this task, for messages."""
        return f"{self.task_type}:{self.task_index}"

    def peers(self):
        """[(name, address)] of the other tasks."""
        return [(f"{job}:{i}", address) for job, i, address in self.tasks
                if (job, i) != (self.task_type, self.task_index)]

    def to_json(self):
        """This config as a TF_CONFIG string."""
        return json.dumps({"cluster": {job: list(a) for job, a in self.cluster.items()},
                           "task": {"type": self.task_type, "index": self.task_index},
                           "rpc_layer": self.rpc_layer})


def _split_address(job, index, address):
    """(host, port) of "host:port" ("[v6]:port" too), or ValueError naming the task."""
    where = f"TF_CONFIG cluster[{job!r}][{index}]"
    if not isinstance(address, str):
        raise ValueError(f"{where} must be a 'host:port' string, got {address!r}")
    host, colon, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where} must be 'host:port' with a port in 1-65535, got "
                         f"{address!r}")
    return host, int(port)


def parse_tf_config(tf_config=None, *, parameter_servers=False):
    """Validates a TF_CONFIG for MultiWorkerMirroredStrategy or ParameterServerStrategy.

    Args:
      tf_config: a TF_CONFIG JSON string or the dict it encodes; None reads
        the TF_CONFIG environment variable.
      parameter_servers: False: a MultiWorkerMirroredStrategy cluster
        ("worker" tasks and at most one "chief"); True: a
        ParameterServerStrategy cluster (exactly one "chief", which runs the
        training program, at least one "worker" and at least one "ps").

    Returns:
      A `ClusterConfig`, or None when tf_config is None and TF_CONFIG is unset
      or empty (a single process).

    Raises:
      ValueError: naming the problem, if the JSON does not parse, "cluster" or
        "task" is missing or malformed, an address is not "host:port" or
        appears twice, the cluster has jobs its strategy does not use ("ps"
        without parameter_servers, "evaluator"), a parameter-server cluster
        lacks its chief, workers or ps tasks or has more than one chief, or
        the task names a job the cluster lacks or an index out of its range.
    """
    source = "TF_CONFIG"
    if tf_config is None:
        tf_config = os.environ.get("TF_CONFIG", "")
        if not tf_config.strip():
            return None
    if isinstance(tf_config, str):
        try:
            tf_config = json.loads(tf_config)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not valid JSON ({error}): {tf_config[:200]!r}") \
                from None
    if not isinstance(tf_config, dict):
        raise ValueError(f"{source} must be a JSON object with 'cluster' and 'task', got "
                         f"{type(tf_config).__name__}")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"{source} needs a 'cluster' object mapping job names to address "
                         f"lists, e.g. {{'worker': ['host1:port', 'host2:port']}}; got "
                         f"{cluster!r}")
    if "ps" in cluster and not parameter_servers:
        raise ValueError(
            f"{source} names parameter servers (job 'ps'): that is ParameterServerStrategy's "
            f"cluster; create it with tf_sampled.distribute.make_parameter_server_strategy() "
            f"and train with ParameterServerTrainer. MultiWorkerMirroredStrategy "
            f"(make_strategy, Trainer) uses 'worker' tasks and at most one 'chief'.")
    jobs = PARAMETER_SERVER_JOBS if parameter_servers else SUPPORTED_JOBS
    strategy = "ParameterServerStrategy" if parameter_servers else "MultiWorkerMirroredStrategy"
    unknown = sorted(set(cluster) - set(jobs))
    if unknown:
        raise ValueError(f"{source} cluster has jobs {unknown}; {strategy} training uses only "
                         f"{list(jobs)} (an 'evaluator' is not part of it: evaluate with "
                         f"the trainer's evaluate)")
    seen = {}
    parsed = {}
    for job, addresses in cluster.items():
        if not isinstance(addresses, (list, tuple)) or not addresses:
            raise ValueError(f"{source} cluster[{job!r}] must be a non-empty list of "
                             f"'host:port' strings, got {addresses!r}")
        for i, address in enumerate(addresses):
            key = _split_address(job, i, address)
            if key in seen:
                raise ValueError(f"{source} gives the address {address!r} to both "
                                 f"{seen[key]} and {job}:{i}")
            seen[key] = f"{job}:{i}"
        parsed[job] = tuple(addresses)
    if len(parsed.get("chief", ())) > 1:
        raise ValueError(f"{source} cluster has {len(parsed['chief'])} 'chief' tasks; at most "
                         f"one{'' if parameter_servers else ' (or none: worker 0 then leads)'}")
    if parameter_servers:
        missing = [job for job in PARAMETER_SERVER_JOBS if job not in parsed]
        if missing:
            raise ValueError(
                f"{source} cluster lacks {missing}: ParameterServerStrategy needs one 'chief' "
                f"(the process that runs the training program and its ClusterCoordinator), "
                f"one or more 'worker' tasks (they run the steps) and one or more 'ps' tasks "
                f"(they hold the sharded class table); got jobs {sorted(parsed)}")
    if not isinstance(task, dict):
        raise ValueError(f"{source} needs a 'task' object such as {{'type': 'worker', "
                         f"'index': 0}}, got {task!r}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in parsed:
        raise ValueError(f"{source} task type {task_type!r} is not a job of its cluster "
                         f"{sorted(parsed)}")
    if isinstance(index, bool) or not isinstance(index, int) or \
            not 0 <= index < len(parsed[task_type]):
        raise ValueError(f"{source} task index {index!r} is out of range: job {task_type!r} "
                         f"has {len(parsed[task_type])} task(s), indices 0-"
                         f"{len(parsed[task_type]) - 1}")
    rpc_layer = tf_config.get("rpc_layer") or "grpc"
    if rpc_layer != "grpc":
        raise ValueError(f"{source} rpc_layer must be 'grpc', got {rpc_layer!r}")
    return ClusterConfig(parsed, task_type, index, rpc_layer)


def _accept_until(listener, stop):
    """Accepts and closes connections on `listener` until `stop` is set."""
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except OSError:  # timeout, or the listener was closed
            continue
        connection.close()


def _reachable(address):
    host, port = _split_address("peer", 0, address)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_peers(config, timeout_s=DEFAULT_STARTUP_TIMEOUT_S):
    """Waits until every task of the cluster listens on its port.

    This task listens on its own port meanwhile, so peers waiting here see
    it; the port is free again on return, for TensorFlow's server. Call it
    before the strategy connects (`make_strategy` does): TensorFlow's own
    start-up waits for absent peers without a time limit.

    Args:
      config: a `ClusterConfig`.
      timeout_s: seconds to wait for the last peer (None: no limit).

    Raises:
      ValueError: this task's port is held by another process.
      ClusterError: naming the tasks that did not come up within timeout_s.
    """
    host, port = _split_address(config.task_type, config.task_index, config.address)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError as error:
        listener.close()
        raise ValueError(f"TF_CONFIG gives this task ({config.task_name}) the address "
                         f"{config.address}, but port {port} is in use on this machine "
                         f"({error.strerror}): another process holds it") from None
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()
    acceptor = threading.Thread(target=_accept_until, args=(listener, stop), daemon=True)
    acceptor.start()
    waiting = dict(config.peers())
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while waiting:
            waiting = {name: a for name, a in waiting.items() if not _reachable(a)}
            if waiting and deadline is not None and time.monotonic() > deadline:
                missing = ", ".join(f"{name} ({address})" for name, address in waiting.items())
                raise ClusterError(
                    f"{config.task_name} waited {timeout_s:g} s for the cluster of "
                    f"{len(config.tasks)} tasks: {missing} did not start. Start every "
                    f"task of TF_CONFIG (each with its own task type and index), or raise "
                    f"startup_timeout_s.")
            if waiting:
                time.sleep(_PROBE_INTERVAL_S)
    finally:
        stop.set()
        acceptor.join()
        listener.close()


def _check_seconds(name, value):
    """value as a float > 0 (None stays None), or ValueError naming `name`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
    return float(value)


def _create_strategy_or_exit_after(timeout_s, create):
    """create(), or the process exits with a traceback once timeout_s passes.

    TensorFlow's multi-worker start-up blocks in C++ holding the GIL while a
    peer is absent; neither a Python thread nor SIGTERM ends that wait (a
    peer that died after `wait_for_peers`, a port held by another program).
    faulthandler's watchdog thread runs without the GIL.
    """
    if timeout_s is None:
        return create()
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    try:
        return create()
    finally:
        faulthandler.cancel_dump_traceback_later()


def make_strategy(tf_config=None, *, collective_timeout_s=DEFAULT_COLLECTIVE_TIMEOUT_S,
                  startup_timeout_s=DEFAULT_STARTUP_TIMEOUT_S, implementation="auto"):
    """A `tf.distribute.MultiWorkerMirroredStrategy` with time limits, from a checked TF_CONFIG.

    Create it first thing in the program, before any other TensorFlow
    operation runs (TensorFlow configures collective operations at start-up).
    Every task of the cluster runs the same program with its own TF_CONFIG.

    Args:
      tf_config: TF_CONFIG as a JSON string or dict; None reads the TF_CONFIG
        environment variable. Without one (unset or empty) the strategy
        trains on this process's devices alone.
      collective_timeout_s: seconds any collective operation (gradient
        all-reduce and all-gather, the gather of touched ids) may wait for
        its peers before it fails with `tf.errors.DeadlineExceededError`
        (which `Trainer.fit` reports as a `ClusterError`); None waits
        forever. It must exceed the slowest worker's lag, the first step's
        tracing included.
      startup_timeout_s: seconds to wait for every task to start
        (`wait_for_peers`); a task whose peers vanish while TensorFlow connects
        to them exits with a traceback after this long instead of blocking.
        None waits forever.
      implementation: "auto", "ring" or "nccl": the collective implementation
        (`tf.distribute.experimental.CommunicationImplementation`).

    Returns:
      A `tf.distribute.MultiWorkerMirroredStrategy`.

    Raises:
      ValueError: TF_CONFIG is invalid (`parse_tf_config`), a timeout is not a
        positive number, the implementation is unknown, this task's port is in
        use, or TensorFlow already ran operations in this process.
      ClusterError: a peer did not start within startup_timeout_s.
    """
    config = parse_tf_config(tf_config)
    timeout = _check_seconds("collective_timeout_s", collective_timeout_s)
    startup_timeout_s = _check_seconds("startup_timeout_s", startup_timeout_s)
    implementations = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
                       "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                       "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}
    if implementation not in implementations:
        raise ValueError(f"implementation must be one of {sorted(implementations)}, got "
                         f"{implementation!r}")
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=timeout, implementation=implementations[implementation])
    if config is None:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({job: list(a) for job, a in config.cluster.items()}),
        task_type=config.task_type, task_id=config.task_index, rpc_layer=config.rpc_layer)
    if config.num_workers > 1:
        wait_for_peers(config, startup_timeout_s)

    def create():
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options)

    try:
        return _create_strategy_or_exit_after(startup_timeout_s, create)
    except RuntimeError as error:
        if "program startup" in str(error) or "initialized" in str(error):
            raise ValueError(f"create the strategy before any other TensorFlow operation "
                             f"runs in this process ({error})") from None
        raise


def free_ports(count, host="localhost"):
    """`count` distinct TCP ports free on `host` now (the OS's ephemeral ports)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_cluster(num_workers, host="localhost", *, num_ps=0):
    """TF_CONFIG strings of a cluster of processes on this machine.

    Args:
      num_workers: workers (positive int); without parameter servers worker 0
        leads.
      host: the address the processes listen on.
      num_ps: 0 for a MultiWorkerMirroredStrategy cluster; > 0 for a
        ParameterServerStrategy cluster of a chief (the coordinator),
        num_workers workers and num_ps "ps" tasks.

    Returns:
      JSON strings, one per process, on free ports: [num_workers], or with
      parameter servers [1 + num_workers + num_ps] in the order chief,
      workers, ps.
    """
    for name, value, least in (("num_workers", num_workers, 1), ("num_ps", num_ps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    sizes = {"chief": 1, "worker": num_workers, "ps": num_ps} if num_ps else \
        {"worker": num_workers}
    ports = iter(free_ports(sum(sizes.values()), host))
    cluster = {job: [f"{host}:{next(ports)}" for _ in range(n)] for job, n in sizes.items()}
    return [json.dumps({"cluster": cluster, "task": {"type": job, "index": i}})
            for job, n in sizes.items() for i in range(n)]


@dataclasses.dataclass
class WorkerResult:
    """What one process of `run_local_cluster` did.

    Attributes:
      index: the process's position in the cluster (worker index without
        parameter servers).
      returncode: exit status (negative: killed by that signal; None: still
        running when the cluster was stopped).
      stdout: its standard output.
      stderr: its standard error.
      timed_out: True when the cluster was killed at the time limit.
      task: its task, e.g. "worker:1".
    """

    index: int
    returncode: object
    stdout: str
    stderr: str
    timed_out: bool = False
    task: str = ""

    @property
    def ok(self):
        """Exited with status 0."""
        return self.returncode == 0


def _drain(stream, lines, echo):
    """Reads `stream` to its end into `lines`, printing each line when `echo`."""
    for line in stream:
        lines.append(line)
        if echo:
            print(line, end="", flush=True)
    stream.close()


def run_local_cluster(argv, num_workers, *, timeout_s=600.0, env=None, cwd=None,
                      grace_s=30.0, echo_worker=None, num_ps=0):
    """Runs `argv` as every task of a local cluster and waits for all of them.

    Each process gets its own TF_CONFIG (`local_cluster`); with num_ps > 0 the
    cluster is a parameter-server one (a chief, num_workers workers, num_ps
    ps tasks: see `make_parameter_server_strategy`, whose worker and ps tasks
    exit by themselves once the chief is gone). When one exits with
    an error, the others get `grace_s` seconds to fail on their own (their
    collectives time out) and are then killed, so a crashed worker never
    leaves the rest waiting; at `timeout_s` every process left is killed
    (SIGKILL: TensorFlow's start-up, blocked on an absent peer, ignores
    SIGTERM).

    Args:
      argv: the command, e.g. [sys.executable, "train.py", "--steps=100"].
      num_workers: worker processes to start.
      timeout_s: limit for the whole cluster, seconds.
      env: base environment (default: this process's); TF_CONFIG is set per
        worker.
      cwd: working directory of the processes.
      grace_s: seconds the others may run on after a worker failed.
      echo_worker: None, or the index of a process whose standard output is
        printed here as it comes (it is collected as well).
      num_ps: parameter-server tasks (0: a MultiWorkerMirroredStrategy cluster).

    Returns:
      [processes] `WorkerResult`, in `local_cluster`'s order.
    """
    configs = local_cluster(num_workers, num_ps=num_ps)
    base_env = dict(os.environ if env is None else env)
    procs, outputs, readers = [], [], []
    for i, config in enumerate(configs):
        proc = subprocess.Popen(argv, env=dict(base_env, TF_CONFIG=config), cwd=cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        outputs.append(([], []))
        for stream, lines, echo in ((proc.stdout, outputs[i][0], i == echo_worker),
                                    (proc.stderr, outputs[i][1], False)):
            readers.append(threading.Thread(target=_drain, args=(stream, lines, echo),
                                            daemon=True))
            readers[-1].start()
    deadline = time.monotonic() + timeout_s
    timed_out = False
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                timed_out = True
                break
            if any(p.poll() not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + grace_s)
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait()
        for reader in readers:
            reader.join()
    return [WorkerResult(i, proc.returncode, "".join(outputs[i][0]), "".join(outputs[i][1]),
                         timed_out=timed_out,
                         task=_task_name(configs[i]) if num_ps else "")
            for i, proc in enumerate(procs)]


def _task_name(tf_config):
    task = json.loads(tf_config)["task"]
    return f"{task['type']}:{task['index']}"


def describe_failure(results, tail=25):
    """A message naming each worker that failed, with its exit and stderr tail."""
    lines = []
    for result in results:
        if result.ok:
            continue
        code = result.returncode
        if code is not None and code < 0:
            how = ("killed at the time limit" if result.timed_out
                   else f"killed by signal {-code} (after another worker failed, or from outside)")
        else:
            how = f"exit {code}"
        stderr = [ln for ln in result.stderr.splitlines()
                  if "oneDNN" not in ln and "cpu_feature_guard" not in ln
                  and "absl::InitializeLog" not in ln]
        lines.append(f"{result.task or f'worker {result.index}'}: {how}\n  stdout tail: "
                     f"{result.stdout[-500:]!r}\n  stderr tail:\n    "
                     + "\n    ".join(stderr[-tail:]))
    return "\n".join(lines)
