"""``test_int8.py`` in a process of its own (see the comment at its top): every int8 check,
isolated from the native state the rest of the suite leaves behind."""
import os
import subprocess
import sys

from conftest import REPO


def test_int8_checks_pass_in_their_own_process():
    env = dict(os.environ, DARKNET_PY_INT8_OWN_PROCESS="1",
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(REPO / "tests" / "infer" / "test_int8.py")],
                         cwd=str(REPO), env=env, capture_output=True, text=True, timeout=900)
    tail = (res.stdout + res.stderr)[-3000:]
    assert res.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail, tail
