import numpy as np

from conftest import run_cli
from runners.onpolicy import RunningMeanStd

QUIET = ["logger.mode=disabled", "logger.progress=false", "smoke=true"]


def test_running_mean_std_equals_batch_statistics():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (5, 17, 1, 40)]
    rms = RunningMeanStd((4,))
    for c in chunks:
        rms.update(c)
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-4)
    z = rms.normalize(allx)
    assert z.dtype == np.float32 and abs(z.mean()) < 1e-3


def _one_line(p):
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    return line


def test_unknown_environment_id_is_one_line(tmp_path):
    line = _one_line(run_cli("experiment=acktr_halfcheetah", "env.id=HalfCheeta-v5", f"hydra.run.dir={tmp_path}", *QUIET))
    assert "unknown environment id 'HalfCheeta-v5'" in line and "HalfCheetah-v5" in line
    line = _one_line(run_cli("experiment=a2c_pong", "env.game=pongg", f"hydra.run.dir={tmp_path}/b", *QUIET))
    assert "unknown Atari game 'pongg'" in line


def test_gymnasium_atari_backend_smoke(tmp_path):
    p = run_cli("experiment=a2c_breakout", "env.backend=gymnasium", f"hydra.run.dir={tmp_path}", *QUIET)
    assert p.returncode == 0, p.stderr[-2000:]
