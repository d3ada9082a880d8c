"""What the harness reads from and does to the machine: core pinning, the cgroup CPU
quota, per-process CPU time, RSS and fds, load average, and the processes it started
(so that every one of them is stopped, also on Ctrl-C or failure)."""

import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# The proxy under test runs on PROXY_CORE; the load generator and the origin share
# CLIENT_CORE (benchmark-protocol: the proxy must be the bottleneck).
PROXY_CORE = "1"
CLIENT_CORE = "0"

_started = []


def spawn(args, core, log_path=None, env=None, cwd=None):
    """Start a long-running process pinned to `core`, in its own process group, and
    remember it so that `stop_all` stops it."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        ["taskset", "-c", core] + list(args),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    _started.append(proc)
    return proc


def run(args, core=None, timeout=None, check=True, env=None):
    """Run a command to completion, pinned to `core` if given; returns its stdout."""
    argv = (["taskset", "-c", core] if core else []) + list(args)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    return res.stdout


def stop(proc, sig=signal.SIGTERM, wait=5.0):
    """Stop one started process group: `sig`, then SIGKILL after `wait` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    if proc in _started:
        _started.remove(proc)


def stop_all():
    for proc in list(reversed(_started)):
        stop(proc, wait=3.0)
    CpuCap.release()


def group_pids(leader_pid):
    """The leader and all processes in its session (nginx master + worker, haproxy -W
    master + worker): every one of them counts toward CPU and RSS."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[3] is the session id (field 6 of stat).
        if int(fields[3]) == leader_pid:
            pids.append(int(name))
    return pids


def cpu_seconds(pids):
    """utime + stime of these processes, in seconds (the most noise-robust figure on a
    shared machine: it does not count time spent waiting for the CPU)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except OSError:
            pass
    return total


def fd_count(pids):
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def busy_cpu_seconds():
    """Non-idle CPU time of the whole machine, to tell how much others used."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / CLK_TCK


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}: {last}")


class CpuCap:
    """The cgroup v1 `cpu` controller quota every proxy runs under for the throughput
    rounds (the same share of one core for each peer)."""

    ROOT = "/sys/fs/cgroup/cpu"
    PATH = ROOT + "/portico-bench"

    @classmethod
    def available(cls):
        return os.path.isdir(cls.ROOT) and os.access(cls.ROOT, os.W_OK)

    @classmethod
    def add(cls, pids):
        os.makedirs(cls.PATH, exist_ok=True)
        for pid in pids:
            try:
                with open(cls.PATH + "/cgroup.procs", "w") as f:
                    f.write(str(pid))
            except OSError:
                pass

    @classmethod
    def set(cls, percent):
        """`percent` of one core, or None for no quota."""
        os.makedirs(cls.PATH, exist_ok=True)
        with open(cls.PATH + "/cpu.cfs_period_us", "w") as f:
            f.write("100000")
        with open(cls.PATH + "/cpu.cfs_quota_us", "w") as f:
            f.write(str(int(percent * 1000)) if percent else "-1")

    @classmethod
    def release(cls):
        if not os.path.isdir(cls.PATH):
            return
        try:
            with open(cls.PATH + "/cgroup.procs") as f:
                pids = f.read().split()
            for pid in pids:
                try:
                    with open(cls.ROOT + "/cgroup.procs", "w") as f:
                        f.write(pid)
                except OSError:
                    pass
            os.rmdir(cls.PATH)
        except OSError:
            pass
