"""`python -m launch.<name> args` without paying for the imports each time.

A launcher's start is mostly imports (jax, flax, optax, orbax, diffrax, genode: about 4 of
the 5 CPU s a one-line user error takes), and the tests launch dozens of them. This
server imports those libraries once, without starting JAX's backend, and then forks one
child per launch. The child is a fresh launcher process in every way the launchers can
see: its own argv, environment, working directory, flags (the launcher module itself is
imported in the child, so its absl flags are defined and parsed there, once), JAX backend
and exit status; its stdout and stderr go to files the server hands back.

Protocol, one JSON line each way: {"name", "args", "env", "cwd", "timeout"} in,
{"status", "stdout", "stderr"} out (status as `subprocess`: negative for a signal).
`tests/test_launch.py::launch` runs one server per test process.
"""

import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback

# What every launcher imports; none of it starts JAX's backend (checked below).
PRELOAD = ("jax", "jax.numpy", "numpy", "flax.linen", "optax", "orbax.checkpoint", "diffrax",
           "absl.app", "absl.flags", "absl.logging", "ml_collections", "ml_collections.config_flags",
           "genode.experiment", "genode.loop", "genode.workdir", "genode.sampling",
           "genode.evaluation.evaluate", "genode.reflow.couple")


def _preload():
  import importlib  # pylint: disable=g-import-not-at-top
  for name in PRELOAD:
    importlib.import_module(name)
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  assert not xla_bridge.backends_are_initialized(), "a preloaded module started JAX"


def _child(request, stdout_path, stderr_path):
  """Runs in the forked child; never returns."""
  code = 1
  try:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, stdout_path), (2, stderr_path)):
      f = os.open(path, os.O_WRONLY | os.O_TRUNC)
      os.dup2(f, fd)
      os.close(f)
    sys.stdin = open(os.devnull)
    module = f"launch.{request['name']}"
    sys.argv = [module, *request["args"]]
    try:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
      code = 0
    except SystemExit as e:
      if e.code is None or isinstance(e.code, int):
        code = e.code or 0
      else:
        print(e.code, file=sys.stderr)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    os._exit(code)  # pylint: disable=protected-access


def _launch(request):
  with tempfile.TemporaryDirectory(prefix="launch-") as tmp:
    paths = [os.path.join(tmp, name) for name in ("stdout", "stderr")]
    for path in paths:
      open(path, "w").close()
    pid = os.fork()
    if pid == 0:
      _child(request, *paths)
    deadline = time.monotonic() + request.get("timeout", 300)
    while True:
      done, status = os.waitpid(pid, os.WNOHANG)
      if done:
        break
      if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise TimeoutError(f"launch.{request['name']} ran past {request['timeout']} s")
      time.sleep(0.02)
    outputs = []
    for path in paths:
      with open(path, errors="replace") as f:
        outputs.append(f.read())
  return {"status": os.waitstatus_to_exitcode(status), "stdout": outputs[0],
          "stderr": outputs[1]}


def main():
  _preload()
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    try:
      reply = _launch(json.loads(line))
    except Exception as e:  # pylint: disable=broad-except
      reply = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
  main()
