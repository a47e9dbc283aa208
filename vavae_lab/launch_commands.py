"""Command lines for `vavae_lab.launch`: torchrun (one or several nodes), the exit-code wrapper and SLURM scripts."""
from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError

STAGES = ("train-tokenizer", "extract-latents", "extract-features", "train-dit", "sample", "evaluate")
RESUMABLE = ("train-tokenizer", "train-dit")  # stages with a --resume flag; the others resume by themselves
# CLI options each stage needs besides --preset/--out (passed to launch() as keyword arguments)
REQUIRED_ARGS = {"extract-latents": ("tokenizer",), "train-dit": ("latents",), "sample": ("dit", "tokenizer"),
                 "evaluate": ("samples",)}
PATH_ARGS = ("tokenizer", "latents", "features", "dit", "samples", "reference")  # made absolute so the cwd does not matter
DEFAULT_PORT = 29500


@dataclass
class LaunchSpec:
    """Everything that defines one launched stage; stored in launch.json so a later session can re-attach."""

    stage: str
    preset: str
    run_dir: str
    gpus: int = 1
    nodes: int = 1
    overrides: list[str] = field(default_factory=list)
    stage_args: dict[str, str] = field(default_factory=dict)
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    python: str = sys.executable
    resume: bool = False

    def to_dict(self) -> dict:
        """A JSON-able dict of the spec."""
        return asdict(self)


def check_spec(spec: LaunchSpec) -> None:
    """Raise ConfigError for an unknown stage, a bad size or a missing stage argument."""
    from .presets import PRESETS

    if spec.stage not in STAGES:
        raise ConfigError(f"unknown stage {spec.stage!r}; choose one of {', '.join(STAGES)}")
    if spec.preset not in PRESETS and not Path(spec.preset).is_file():
        raise ConfigError(f"{spec.preset!r} is neither a preset nor a YAML file; presets: {', '.join(PRESETS)}")
    if spec.gpus < 1 or spec.nodes < 1 or not 0 <= spec.node_rank < spec.nodes:
        raise ConfigError(f"gpus={spec.gpus}, nodes={spec.nodes}, node_rank={spec.node_rank}: need gpus >= 1, "
                          "nodes >= 1 and 0 <= node_rank < nodes (gpus counts processes per node: gpus=1 on a "
                          "machine without a GPU runs one process on the CPU)")
    missing = [a for a in REQUIRED_ARGS.get(spec.stage, ()) if a not in spec.stage_args]
    if missing:
        example = ", ".join(f"{a}='path/to/{a}'" for a in missing)
        raise ConfigError(f"stage {spec.stage} needs {', '.join('--' + a for a in missing)}; "
                          f"pass launch({spec.stage!r}, {spec.preset!r}, {example}, ...)")
    for item in spec.overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")


def normalise_stage_args(stage_args: dict) -> dict[str, str]:
    """Keyword arguments -> CLI option values (paths absolute, None dropped)."""
    out = {}
    for key, value in stage_args.items():
        if value is None:
            continue
        out[key] = str(Path(value).expanduser().resolve()) if key in PATH_ARGS else str(value)
    return out


def torchrun_args(spec: LaunchSpec) -> list[str]:
    """The torchrun options: one node (a free port unless one is given) or several through c10d rendezvous."""
    args = ["--nproc_per_node", str(spec.gpus), "--nnodes", str(spec.nodes)]
    if spec.nodes > 1:
        endpoint = spec.rdzv_endpoint or f"{spec.master_addr}:{spec.master_port or DEFAULT_PORT}"
        run_id = Path(spec.run_dir).name or "vavae_lab"
        return args + ["--node_rank", str(spec.node_rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
                       "--rdzv_id", run_id]
    if spec.rdzv_endpoint:
        return args + ["--rdzv_backend", "c10d", "--rdzv_endpoint", spec.rdzv_endpoint]
    if spec.master_port is not None:
        return args + ["--master_addr", spec.master_addr, "--master_port", str(spec.master_port)]
    return args + ["--standalone"]  # torchrun picks a free port, so several runs can share a machine


def stage_argv(spec: LaunchSpec) -> list[str]:
    """The `vavae_lab <stage> ...` part of the command line."""
    source = ["--preset", spec.preset] if not Path(spec.preset).is_file() else ["--config", spec.preset]
    argv = [spec.stage, *source, "--out", spec.run_dir]
    for key, value in spec.stage_args.items():
        argv += [f"--{key}", value]
    if spec.resume and spec.stage in RESUMABLE:
        argv.append("--resume")
    return argv + list(spec.overrides)


def build_command(spec: LaunchSpec) -> list[str]:
    """`python -m torch.distributed.run <torchrun options> -m vavae_lab <stage> ...` as an argument list."""
    return [spec.python, "-m", "torch.distributed.run", *torchrun_args(spec), "-m", "vavae_lab", *stage_argv(spec)]


def wrapped_command(command: list[str], exit_code_file: Path) -> list[str]:
    """`sh -c` running `command`, then writing its exit status atomically to `exit_code_file`."""
    target = shlex.quote(str(exit_code_file))
    script = f"{shlex.join(command)}; code=$?; echo $code > {target}.tmp; mv {target}.tmp {target}; exit $code"
    return ["sh", "-c", script]


def sbatch_text(spec: LaunchSpec, *, job_name: str | None = None, time: str = "48:00:00",
                partition: str | None = None, account: str | None = None, cpus_per_gpu: int = 8,
                workdir: str | None = None) -> str:
    """A SLURM batch script running the same stage on spec.nodes nodes x spec.gpus GPUs with torchrun."""
    name = job_name or f"vavae-{spec.stage}"
    extra = "".join(f"#SBATCH --{k}={v}\n" for k, v in (("partition", partition), ("account", account)) if v)
    single = LaunchSpec(**{**spec.to_dict(), "python": "python", "nodes": 1, "master_port": None,
                           "rdzv_endpoint": None})
    stage = shlex.join(["-m", "vavae_lab", *stage_argv(single)])
    cd = f"cd {shlex.quote(workdir)}\n" if workdir else ""
    return (
        "#!/bin/bash\n"
        f"#SBATCH --job-name={name}\n"
        f"#SBATCH --nodes={spec.nodes}\n"
        "#SBATCH --ntasks-per-node=1\n"
        f"#SBATCH --gpus-per-node={spec.gpus}\n"
        f"#SBATCH --cpus-per-task={cpus_per_gpu * spec.gpus}\n"
        f"#SBATCH --time={time}\n"
        "#SBATCH --output=slurm-%x-%j.log\n"  # in the submit folder: SLURM opens it before the run dir exists
        f"{extra}"
        "# one torchrun per node; they meet at the first node of the allocation (c10d rendezvous)\n"
        "set -euo pipefail\n"
        f"{cd}"
        "export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n"
        f"export MASTER_PORT={spec.master_port or DEFAULT_PORT}\n"
        f"mkdir -p {shlex.quote(spec.run_dir)}\n"
        "srun python -m torch.distributed.run \\\n"
        f"    --nnodes \"$SLURM_NNODES\" --nproc_per_node {spec.gpus} \\\n"
        "    --rdzv_backend c10d --rdzv_endpoint \"$MASTER_ADDR:$MASTER_PORT\" --rdzv_id \"$SLURM_JOB_ID\" \\\n"
        f"    {stage}\n"
        "# after a time-out or preemption, submit the script again with --resume added to the vavae_lab line\n"
    )
