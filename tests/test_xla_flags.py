"""gl_jax's XLA defaults: added only where measured and not set by the user, before JAX's backend starts."""

import os
import subprocess
import sys

import pytest

from gl_jax import xla_flags

VERIFIED = xla_flags.VERIFIED_JAXLIB[0]


def test_default_flags_adds_the_convolution_option_to_the_users_flags():
    assert xla_flags.default_flags("", jaxlib=VERIFIED) == xla_flags.CPU_CONVOLUTIONS
    user = "--xla_force_host_platform_device_count=2"
    assert xla_flags.default_flags(user, jaxlib=VERIFIED) == f"{user} {xla_flags.CPU_CONVOLUTIONS}"


def test_default_flags_leaves_a_users_own_setting_and_unmeasured_jaxlibs_alone():
    mine = "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    assert xla_flags.default_flags(mine, jaxlib=VERIFIED) == mine
    # XLA aborts on a flag it does not know: never added for a jaxlib it was not measured with.
    assert xla_flags.default_flags("", jaxlib=(0, 4)) == ""
    assert xla_flags.default_flags("", jaxlib=(VERIFIED[0], VERIFIED[1] + 1)) == ""
    assert xla_flags.default_flags("", jaxlib=None) == ""


def _fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GL_JAX_XLA_DEFAULTS")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True, timeout=120
    )


_PRINT = (
    "import os; from gl_jax import xla_flags; print(xla_flags.apply_defaults(), os.environ.get('XLA_FLAGS'))"
)


def test_apply_defaults_sets_the_environment_unless_opted_out():
    proc = _fresh(_PRINT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if xla_flags._jaxlib_version() in xla_flags.VERIFIED_JAXLIB:
        assert proc.stdout.split() == ["True", xla_flags.CPU_CONVOLUTIONS]
    else:  # A jaxlib the option was not measured with (and may not know): XLA's own defaults.
        assert proc.stdout.split() == ["False", "None"]
    proc = _fresh(_PRINT, GL_JAX_XLA_DEFAULTS="0")
    assert proc.stdout.split() == ["False", "None"]


def test_apply_defaults_refuses_once_the_backend_has_started(monkeypatch):
    import jax

    jax.devices()  # The backend has read XLA_FLAGS: a change now would silently do nothing.
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: VERIFIED)
    monkeypatch.delenv("GL_JAX_XLA_DEFAULTS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(RuntimeError, match="before the first JAX computation"):
        xla_flags.apply_defaults()
    assert os.environ["XLA_FLAGS"] == ""


def test_the_command_applies_the_defaults_before_parsing_anything(monkeypatch, capsys):
    from gl_jax import main

    calls = []
    monkeypatch.setattr(xla_flags, "apply_defaults", lambda: calls.append(sys.argv[:]) or True)
    monkeypatch.setattr(sys, "argv", ["gl-jax", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main.run()
    assert exit_info.value.code in (0, None) and calls == [["gl-jax", "--help"]]
    assert "GL_JAX_XLA_DEFAULTS=0" in capsys.readouterr().out
