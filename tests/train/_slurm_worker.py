"""The `gl-jax` command, run as it is, recording the files this process opened for writing.

  python -m tests.train._slurm_worker RECORD -- --config toy_vp:smoke --workdir W ...

Everything after `--` is the command line of `gl-jax` (`python -m gl_jax.main`). When the command ends,
however it ends, RECORD gets a JSON list of the absolute paths this process opened for writing or renamed
a file to (through Python: the files that orbax's C++ writes are not among them), so a test can tell
which process wrote the metrics and the pictures of a run whose processes share one workdir.
"""

import json
import os
import runpy
import sys

# Any of these in an open's flags means the file is written (O_RDONLY is 0 and cannot be tested for).
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main() -> None:
    record, separator, *argv = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: python -m tests.train._slurm_worker RECORD -- GL_JAX_ARGS...")
    written: set[str] = set()

    def audit(event: str, args: tuple) -> None:
        # "open" is raised by open(), io.open() and os.open() with (path, mode, flags), in every thread.
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and (args[2] or 0) & _WRITING:
            written.add(os.path.abspath(os.fsdecode(args[0])))
        # A file written whole under a temporary name, then renamed to its own (src, dst, *dir_fds).
        elif event in ("os.rename", "os.replace") and isinstance(args[1], (str, bytes, os.PathLike)):
            written.add(os.path.abspath(os.fsdecode(args[1])))

    sys.addaudithook(audit)  # Cannot be removed; the record below is written after the run, so it adds one.
    sys.argv = ["gl-jax", *argv]
    try:
        runpy.run_module("gl_jax.main", run_name="__main__", alter_sys=True)
    finally:
        with open(record, "w") as f:
            json.dump(sorted(written), f)


if __name__ == "__main__":
    main()
