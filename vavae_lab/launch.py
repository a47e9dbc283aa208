"""`launch(stage, preset, gpus=N)`: start a torchrun job from a notebook cell, detached, and follow, stop or resume it."""
from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_json
from .errors import ConfigError
from .launch_commands import (LaunchSpec, build_command, check_spec, normalise_stage_args, sbatch_text,
                              wrapped_command)

# a tqdm bar as written to a log file: "desc:  40%|####  | 8/20 [00:03<00:04, ...]"
LOG_HEADER = b"===== "  # launch.log: each launch of a run folder starts with this line (stamp and command)
_BAR = re.compile(r"(?:(?P<desc>[^\r\n|]*?):\s*)?\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[")


@dataclass
class RunStatus:
    """The state of a launched run: running, finished, failed, stopped or not started, plus its progress."""

    state: str
    exit_code: int | None
    step: int | None = None
    total: int | None = None
    phase: str | None = None  # the description of the newest progress bar, e.g. "tokenizer[smoke]"

    def __str__(self) -> str:
        code = "" if self.exit_code is None else f" (exit code {self.exit_code})"
        where = f", {self.phase or 'step'} {self.step}/{self.total}" if self.step is not None else ""
        return f"{self.state}{code}{where}"


def _group_alive(pgid: int) -> bool:
    """True while any process of the group exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_bar(text: str) -> tuple[str | None, int, int] | None:
    """(description, n, total) of the newest tqdm update in `text`, or None."""
    last = None
    for m in _BAR.finditer(text):
        last = m
    if last is None:
        return None
    desc = (last.group("desc") or "").strip() or None
    return desc, int(last.group("n")), int(last.group("total"))


class LaunchHandle:
    """A launched (or dry-run) stage: status(), tail(), follow(), stop(), resume(), shell_command(), sbatch_script()."""

    def __init__(self, spec: LaunchSpec, *, pid: int | None = None, pgid: int | None = None,
                 process: subprocess.Popen | None = None, started: str | None = None, host: str | None = None):
        self.spec, self.pid, self.pgid, self._process = spec, pid, pgid, process
        self.started, self.host = started, host
        self.command = build_command(spec)

    # ------------------------------------------------------------------ files
    @property
    def run_dir(self) -> Path:
        """The run directory (the stage's --out)."""
        return Path(self.spec.run_dir)

    def _file(self, name: str) -> Path:
        suffix = f".node{self.spec.node_rank}" if self.spec.node_rank else ""
        stem, dot, ext = name.partition(".")
        return self.run_dir / f"{stem}{suffix}{dot}{ext}"

    @property
    def log_path(self) -> Path:
        """launch.log: stdout and stderr of every rank on this node."""
        return self._file("launch.log")

    # ------------------------------------------------------------------ commands
    def shell_command(self) -> str:
        """The equivalent command line to paste into a terminal (on every node, with its own --node_rank)."""
        return shlex.join(self.command)

    def sbatch_script(self, path: str | Path | None = None, **slurm) -> str:
        """The SLURM batch script for this stage (written to `path` if given); options: time, partition, ..."""
        text = sbatch_text(self.spec, **slurm)
        if path is not None:
            Path(path).write_text(text)
        return text

    # ------------------------------------------------------------------ state
    def exit_code(self) -> int | None:
        """The exit status written by the wrapper when the run ended by itself, else None."""
        path = self._file("exit_code")
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def is_running(self) -> bool:
        """True while the launched process group is alive."""
        if self.pgid is None:
            return False
        if self._process is not None and self._process.poll() is None:
            return True
        return _group_alive(self.pgid)

    def status(self) -> RunStatus:
        """running / finished / failed / stopped / not started, the exit code, and the newest progress step."""
        bar = _last_bar(self._read_tail(64_000))
        phase, step, total = bar if bar else (None, None, None)
        if self.pgid is None:
            return RunStatus("not started", None)
        if self.is_running():
            return RunStatus("running", None, step, total, phase)
        code = self.exit_code()
        if self._file("stopped").exists():
            return RunStatus("stopped", code, step, total, phase)
        if code is None:  # killed from outside (or the machine went down) before the wrapper could write
            return RunStatus("failed", None, step, total, phase)
        return RunStatus("finished" if code == 0 else "failed", code, step, total, phase)

    def _read_tail(self, nbytes: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - nbytes))
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 20) -> str:
        """The last `n` lines of launch.log (progress-bar redraws collapsed to their newest state)."""
        lines = [line.rsplit("\r", 1)[-1] for line in self._read_tail(200_000).split("\n")]
        return "\n".join([line for line in lines if line.strip()][-n:]) if n > 0 else ""

    # ------------------------------------------------------------------ control
    def wait(self, timeout: float | None = None, poll: float = 0.5) -> RunStatus:
        """Block until the run ends (or `timeout` seconds pass); returns its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_running() and (deadline is None or time.monotonic() < deadline):
            time.sleep(poll)
        return self.status()

    def follow(self, poll: float = 1.0, *, file=None) -> RunStatus:
        """Print this launch's part of the log into the cell until the run ends, with a progress bar; Ctrl-C /
        interrupt stops following only. Earlier launches of the run folder (a stopped run, say) are in tail()."""
        from tqdm.auto import tqdm

        out = file or sys.stdout
        bar, desc, offset, pending = None, None, self._section_start(), ""
        try:
            while True:
                running = self.is_running()
                chunk, offset = self._read_from(offset)
                pending += chunk
                *complete, pending = re.split(r"[\r\n]", pending)
                for piece in complete:
                    progress = _last_bar(piece)
                    if progress:
                        d, n, total = progress
                        if bar is None or d != desc or bar.total != total:
                            if bar is not None:
                                bar.close()
                            bar, desc = tqdm(total=total, desc=d or self.spec.stage, dynamic_ncols=True), d
                        bar.n = n
                        bar.refresh()
                    elif piece.strip() and not piece.startswith("*" * 10):
                        print(piece, file=out, flush=True)
                if not running:
                    break
                time.sleep(poll)
        except KeyboardInterrupt:
            print(f"stopped following; the run goes on. Re-attach with vavae_lab.attach({str(self.run_dir)!r})",
                  file=out)
        finally:
            if bar is not None:
                bar.close()
        status = self.status()
        print(f"{self.spec.stage}: {status}", file=out)
        return status

    stream = follow

    def _section_start(self) -> int:
        """The byte offset of the newest launch's "===== " header in launch.log (0 without one)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return 0
        newest = data.rfind(b"\n" + LOG_HEADER)
        return newest + 1 if newest >= 0 else 0

    def _read_from(self, offset: int) -> tuple[str, int]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return "", offset
        return data.decode("utf-8", errors="replace"), offset + len(data)

    def stop(self, timeout: float = 30.0) -> RunStatus:
        """SIGTERM to the whole process group (torchrun and every rank), SIGKILL after `timeout` seconds."""
        if self.pgid is None or not self.is_running():
            return self.status()
        self._file("stopped").write_text(datetime.datetime.now().isoformat(timespec="seconds") + "\n")
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            return self.status()
        if self.wait(timeout=timeout, poll=0.2).state == "running":
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(timeout=10, poll=0.2)
        return self.status()

    def resume(self) -> "LaunchHandle":
        """Start the same command again with --resume (same run directory); returns the new handle.

        A run stopped before its first checkpoint starts again from step 0 (the CLI refuses --resume there).
        """
        from .checkpoint import latest_checkpoint

        if self.is_running():
            raise ConfigError(f"the run in {self.run_dir} is still running; stop() it before resume()")
        spec = LaunchSpec(**{**self.spec.to_dict(), "resume": latest_checkpoint(self.spec.run_dir) is not None})
        return _start(spec)

    def __repr__(self) -> str:
        return f"LaunchHandle({self.spec.stage} {self.spec.preset} in {self.run_dir}: {self.status()})"


def _start(spec: LaunchSpec) -> LaunchHandle:
    """Start the wrapped command detached (own session), logging to launch.log and recording launch.json."""
    handle = LaunchHandle(spec)
    handle.run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("exit_code", "stopped"):
        handle._file(name).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(handle.log_path, "ab") as log:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        log.write(LOG_HEADER + f"{stamp} {handle.shell_command()}\n".encode())
        log.flush()
        process = subprocess.Popen(wrapped_command(handle.command, handle._file("exit_code")), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    handle.pid, handle.pgid, handle._process = process.pid, os.getpgid(process.pid), process
    handle.started, handle.host = stamp, socket.gethostname()
    record = {"pid": handle.pid, "pgid": handle.pgid, "command": handle.command, "shell": handle.shell_command(),
              "started": stamp, "host": handle.host, **spec.to_dict()}
    atomic_write_json(handle._file("launch.json"), record)
    return handle


def launch(stage: str, preset: str, gpus: int = 1, nodes: int = 1, overrides=(), run_dir=None, node_rank: int = 0,
           master_addr: str = "127.0.0.1", master_port: int | None = None, rdzv_endpoint: str | None = None,
           python: str = sys.executable, dry_run: bool = False, resume: bool = False, **stage_args) -> LaunchHandle:
    """Start `torchrun -m vavae_lab <stage>` detached on `gpus` processes per node; returns a LaunchHandle.

    Stage options go in as keywords (train-dit: latents=..., extract-latents: tokenizer=..., sample: dit=...,
    tokenizer=...). The run keeps going when the notebook closes; `attach(run_dir)` finds it again.
    `dry_run=True` only builds the command (see handle.shell_command() and handle.sbatch_script()).
    """
    if run_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{Path(str(preset)).stem}-{stage}-{stamp}"
    spec = LaunchSpec(stage=stage, preset=str(preset), run_dir=str(Path(run_dir).expanduser().resolve()), gpus=gpus,
                      nodes=nodes, overrides=[str(o) for o in overrides], stage_args=normalise_stage_args(stage_args),
                      node_rank=node_rank, master_addr=master_addr, master_port=master_port,
                      rdzv_endpoint=rdzv_endpoint, python=python, resume=resume)
    check_spec(spec)
    if dry_run:
        return LaunchHandle(spec)
    handle = _start(spec)
    print(f"started {stage} ({preset}, {nodes} x {gpus} processes) in {handle.run_dir}; log: {handle.log_path}\n"
          f"terminal equivalent: {handle.shell_command()}")
    return handle


def attach(run_dir: str | Path, node_rank: int = 0) -> LaunchHandle:
    """Re-attach to a run started by `launch` (e.g. from a reopened notebook) through its launch.json."""
    run_dir = Path(run_dir).expanduser().resolve()
    name = "launch.json" if node_rank == 0 else f"launch.node{node_rank}.json"
    path = run_dir / name
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; attach() needs a run directory created by vavae_lab.launch()")
    record = json.loads(path.read_text())
    fields = LaunchSpec.__dataclass_fields__
    spec = LaunchSpec(**{k: v for k, v in record.items() if k in fields})
    if record.get("host") not in (None, socket.gethostname()):
        print(f"note: this run was started on {record['host']}; its process state is only visible there")
    return LaunchHandle(spec, pid=record["pid"], pgid=record["pgid"], started=record.get("started"),
                        host=record.get("host"))
