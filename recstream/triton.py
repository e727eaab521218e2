"""The embedded Triton Inference Server: the ``tritonserver`` binary and python backend of ``nvidia-pytriton``.

The python backend runs ``model.py`` in a stub process that links libpython and sees only the environment
that ``EXECUTION_ENV_PATH`` names, so the launcher (1) builds a backend directory with the backend and the
stub of this Python version, (2) links ``<model>/pyenv`` to the running environment for every model, and
(3) puts the interpreter's lib dir and the wheel's bundled libraries on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

from recstream.errors import StackError
from recstream.processes import ChildProcess, ensure_port_free, http_ok, log_tail
from stream.settings import Settings

logger = logging.getLogger(__name__)


def _pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("triton: the nvidia-pytriton wheel is not installed (it ships the tritonserver binary)")
    return Path(next(iter(spec.submodule_search_locations)))


def _copy_if_changed(src: Path, dst: Path) -> None:
    """Copy atomically (a running server may have the old file mapped), only when size or mtime differ."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.stat().st_mtime == src.stat().st_mtime:
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class TritonServer(ChildProcess):
    """``tritonserver`` on 127.0.0.1 with the model repository in explicit model-control mode.

    ``with TritonServer(settings) as server: server.wait_ready()`` starts it and stops it (with its stub
    processes: they share its process group) on exit.
    """

    name = "triton"

    def __init__(self, settings: Settings, repository: Path | None = None, work_dir: Path = Path("var/triton")) -> None:
        super().__init__(work_dir / "tritonserver.log")
        self._settings = settings
        self._repository = (repository or settings.model_repository).resolve()
        self._work_dir = work_dir

    def start(self) -> None:
        s = self._settings
        pytriton = _pytriton_dir()
        binary = pytriton / "tritonserver" / "bin" / "tritonserver"
        if not os.access(binary, os.X_OK):
            raise StackError(f"triton: no executable tritonserver at {binary} (reinstall nvidia-pytriton)")
        if not (self._repository / s.model_name / "config.pbtxt").is_file():
            raise StackError(
                f"triton: no model {s.model_name!r} (config.pbtxt) in {self._repository}; "
                "set --model-repository or RECSTREAM_MODEL_REPOSITORY"
            )
        ports = {"HTTP": s.triton_http_port, "gRPC": s.triton_grpc_port, "metrics": s.triton_metrics_port}
        if len(set(ports.values())) < len(ports):
            raise StackError(f"triton: the HTTP, gRPC and metrics ports must differ, got {ports}")
        for what, port in ports.items():
            ensure_port_free(port, f"triton {what}")
        backends = self._prepare_backends(pytriton)
        self._link_environment()
        argv = [
            str(binary),
            f"--model-repository={self._repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--load-model={s.model_name}",
            "--http-address=127.0.0.1",
            f"--http-port={s.triton_http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={s.triton_grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={s.triton_metrics_port}",
            # shared-memory names of the python backend must not collide with another server on this host
            f"--backend-config=python,shm-region-prefix-name=recstream-{os.getpid()}-{s.triton_grpc_port}-",
            "--exit-timeout-secs=10",
        ]
        self._spawn(argv, env=self._env(pytriton))

    def _prepare_backends(self, pytriton: Path) -> Path:
        """``<work_dir>/backends/python``: the python backend plus the stub built for this Python."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = pytriton / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise StackError(f"triton: nvidia-pytriton has no python backend stub for Python {version}")
        backend = pytriton / "tritonserver" / "backends" / "python"
        target = self._work_dir / "backends" / "python"
        target.mkdir(parents=True, exist_ok=True)
        for src in (backend / "libtriton_python.so", backend / "triton_python_backend_utils.py", stub):
            _copy_if_changed(src, target / src.name)
        return target.parent.resolve()

    def _link_environment(self) -> None:
        """Point ``<model>/pyenv`` (the config's EXECUTION_ENV_PATH) of every model at this environment."""
        for config in self._repository.glob("*/config.pbtxt"):
            link = config.parent / "pyenv"
            if link.is_symlink():
                if Path(os.readlink(link)) == Path(sys.prefix):
                    continue
                link.unlink()
            elif link.exists():
                raise StackError(f"triton: {link} exists and is not a link; remove it")
            link.symlink_to(sys.prefix, target_is_directory=True)

    @staticmethod
    def _env(pytriton: Path) -> dict[str, str]:
        libs = [str(sysconfig.get_config_var("LIBDIR")), str(pytriton.parent / "nvidia_pytriton.libs")]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
        # config.pbtxt's KIND_AUTO would give a GPU instance on a machine with one; the embedded stack's
        # onnxruntime is the CPU build, so this Triton sees no GPU (production: NVIDIA's image, onnxruntime-gpu)
        env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the server is ready and the model loaded; StackError with the log's tail otherwise."""
        base = f"http://127.0.0.1:{self._settings.triton_http_port}/v2"
        model = self._settings.model_name
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                code = None if self._proc is None else self._proc.returncode
                raise StackError(f"triton: exited with {code} during start-up:\n{log_tail(self.log_path)}")
            if http_ok(f"{base}/health/ready") and http_ok(f"{base}/models/{model}/ready"):
                logger.info("triton ready: model %s on gRPC port %d", model, self._settings.triton_grpc_port)
                return
            time.sleep(0.25)
        raise StackError(f"triton: model {model!r} not ready after {timeout_s:.0f} s:\n{log_tail(self.log_path)}")
