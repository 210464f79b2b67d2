"""Config flags with clear errors: `--config=configs/x.py[:arg]` plus `--config.a.b=value`.

ml_collections reports an override of a field that does not exist
(`--config.nonexistent=1`) as a bare AttributeError from inside flag parsing; `parse_flags`
turns it into a message that names the bad field and lists the fields that exist.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from typing import Sequence

from absl import flags
import ml_collections


def parse_flags(argv: Sequence[str], config_flag: str = "config") -> list[str]:
  """absl's flag parser (use as `app.run(main, flags_parser=parse_flags)`)."""
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    _exit(f"FATAL Flags parsing error: {_last_error_line(str(e))}\nPass --helpshort or "
          "--helpfull to see help on flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _exit(override_error_message(argv, config_flag, e))
  raise AssertionError("unreachable")


def _last_error_line(message: str) -> str:
  """A flag error's message without the traceback ml_collections embeds in it (a config
  file that raised): its last `SomeError: …` line, or the message as it is."""
  if "Traceback (most recent call last)" not in message:
    return message
  lines = [line.strip() for line in message.splitlines()]
  errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
  return errors[-1] if errors else lines[-1]


def define_config_file_with_default(name: str, default_path: str, help_text: str):
  """`config_flags.DEFINE_config_file(name, default_path)`, whose `--<name>.<field>=…`
  overrides ml_collections applies at definition time; a bad one exits with one line."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  try:
    return config_flags.DEFINE_config_file(name, default_path, help_text, lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    argv = sys.argv + ([] if any(a.startswith(f"--{name}=") for a in sys.argv)
                       else [f"--{name}={default_path}"])
    sys.exit(override_error_message(argv, name, error))


def override_error_message(argv: Sequence[str], config_flag: str, error: Exception) -> str:
  """Names the config fields given on the command line that do not exist, and the valid ones."""
  config = _load_config(argv, config_flag)
  if config is None:
    return f"Could not parse --{config_flag}: {type(error).__name__}: {error}"
  valid = flat_keys(config)
  pattern = re.compile(rf"^--?{re.escape(config_flag)}\.([^=\s]+)")
  unknown = [m.group(1) for a in argv if (m := pattern.match(a)) and m.group(1) not in valid]
  if not unknown:
    return f"Bad --{config_flag} override: {type(error).__name__}: {error}"
  return (f"Unknown config field(s) {unknown} in --{config_flag}.<field> overrides. "
          f"Valid fields:\n  " + "\n  ".join(sorted(valid)))


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every field's dotted name, e.g. ['data.name', 'optim.learning_rate', 'seed', …]."""
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys += flat_keys(value, f"{prefix}{key}.")
    else:
      keys.append(f"{prefix}{key}")
  return keys


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` → `get_config(arg)` of that file."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_genode_config", path)
  if module_spec is None:
    raise FileNotFoundError(f"No config file {path!r}")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _load_config(argv, config_flag):
  for i, a in enumerate(argv):
    m = re.match(rf"^--?{re.escape(config_flag)}(=(.*))?$", a)
    if m:
      spec = m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
      try:
        return load_config_file(spec)
      except Exception:  # pylint: disable=broad-exception-caught
        return None
  return None


def _exit(message: str):
  print(message, file=sys.stderr)
  sys.exit(2)
