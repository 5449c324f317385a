"""`distributed` and `hub` sections (FIELDS §16, §17)."""
from __future__ import annotations

import importlib.util
from typing import Literal

from studio.config.fields import Section, setting


# Why a sharding strategy is refused for several processes (the accelerate config for both is written
# and tested; what is missing is in the trainer).
_NOT_YET = {
    "fsdp2": "fsdp2 is not supported by the trainer yet: checkpoints, samples and exports read whole weights on "
             "the main process, and FSDP2 leaves only a slice of them on each GPU (gathering them for a save is not "
             "built); accelerate runs FSDP on GPUs only, so it cannot be tested on a CPU machine "
             "(`python -m bench.fsdp2_gpus` is the check on 2 GPUs). Use ddp: each GPU holds the frozen base model and the "
             "adapter's gradients are averaged",
    "deepspeed": "deepspeed is not supported by the trainer yet: checkpoints, samples and exports read whole weights "
                 "on the main process, which ZeRO shards (gathering them is not built), and its config lacks the "
                 "per-GPU batch (train_micro_batch_size_per_gpu) that accelerate asks for. Use ddp: each GPU holds "
                 "the frozen base model and the adapter's gradients are averaged",
}


class DistributedSection(Section):
    """Several GPUs or machines through `accelerate launch` (see studio/distributed.py)."""

    num_processes: int = setting(1, "Processes (GPUs) on each machine. More than 1 starts the job with "
                                 "`accelerate launch`; every process takes its own batches, so the effective "
                                 "batch is batch size x accumulation x processes x machines.", ge=1, le=64)
    strategy: Literal["ddp", "fsdp2", "deepspeed"] = setting(
        "ddp", "How the processes share the work. ddp: every GPU holds the whole model and the gradients "
        "are averaged (simplest and fastest when the model fits one GPU, the usual case for adapters). "
        "fsdp2: PyTorch's fully sharded data parallel, each GPU keeps a slice of the weights, for models "
        "too big for one GPU. deepspeed: ZeRO stages 1-3 (needs the deepspeed package and CUDA).",
        group="advanced")
    gpu_ids: str = setting("", "Which GPUs of this machine to use, comma-separated (e.g. `0,1`); as many as "
                           "num_processes. Empty: the first num_processes GPUs.", group="advanced")
    deepspeed_zero_stage: int = setting(2, "DeepSpeed ZeRO stage: 1 shards the optimizer state, 2 also the "
                                        "gradients, 3 also the weights.", ge=1, le=3, group="advanced")
    offload: Literal["none", "optimizer", "optimizer_and_params"] = setting(
        "none", "Move state to CPU memory to fit a bigger model, at a cost in speed: `optimizer` offloads "
        "the optimizer state (DeepSpeed ZeRO, FSDP2 offloads weights and optimizer together); "
        "`optimizer_and_params` also the weights (DeepSpeed stage 3, FSDP2).", group="advanced")
    num_machines: int = setting(1, "Machines taking part. Start the same job on each one with its own "
                                "machine_rank; the CLI and the Train tab print the exact command per machine.",
                                ge=1, le=256, group="advanced")
    machine_rank: int = setting(0, "This machine's number, 0 to num_machines-1; 0 is the main machine, "
                                "which writes the run folder.", ge=0, le=255, group="advanced")
    main_process_ip: str = setting("", "Address of the machine with rank 0, reachable from every other "
                                   "machine (several machines only).", group="advanced")
    main_process_port: int = setting(29500, "Port on the main machine where the processes meet; pick "
                                     "another one when two jobs run side by side.", ge=1024, le=65535,
                                     group="advanced")
    ddp_gradient_as_bucket_view: bool = setting(
        True, "ddp: let each gradient live inside DDP's communication buffer instead of beside it, which saves "
        "one copy of the trainable weights' gradients per GPU; the numbers are the same.", group="advanced")
    ddp_static_graph: bool = setting(
        False, "ddp: promise that every step uses the same trainable weights in the same way (no layer "
        "skipped at random), so DDP can overlap more communication with the backward pass. Leave it off "
        "when a step can skip weights (e.g. text-encoder training switched per step).", group="advanced")
    timeout_minutes: int = setting(30, "How long a process waits for the others at a synchronisation "
                                   "point before the job fails (a crashed or stuck rank ends the job "
                                   "instead of hanging it).", ge=1, le=1440, group="advanced")
    accelerate_extra_args: str = setting("", "Extra arguments for `accelerate launch`, split as a shell "
                                         "splits words (e.g. `--main_process_port 29501`).", group="advanced")

    def problems(self, cfg) -> list[tuple[str, str]]:
        ids = [part.strip() for part in self.gpu_ids.split(",") if part.strip()]
        if any(not part.isdigit() for part in ids):
            return [("distributed.gpu_ids", f"expected comma-separated integers, got {self.gpu_ids!r}")]
        out = []
        if ids and len(ids) != self.num_processes:
            out.append(("distributed.gpu_ids", f"{len(ids)} GPU ids given but num_processes is "
                        f"{self.num_processes}; they must match"))
        try:
            import shlex

            shlex.split(self.accelerate_extra_args)
        except ValueError as err:
            out.append(("distributed.accelerate_extra_args", f"cannot be split into arguments: {err}"))
        return out + self._combinations(cfg)

    def _combinations(self, cfg) -> list[tuple[str, str]]:
        """Combinations that cannot work, found before anything is launched."""
        out = []
        if self.machine_rank >= self.num_machines:
            out.append(("distributed.machine_rank", f"must be below num_machines ({self.num_machines}); "
                        "rank 0 is the main machine"))
        if self.num_machines > 1 and not self.main_process_ip.strip():
            out.append(("distributed.main_process_ip", "required with several machines: the address of the "
                        "machine with rank 0, reachable from the others"))
        if self.strategy != "ddp" and self.num_processes * self.num_machines > 1:
            out.append(("distributed.strategy", _NOT_YET[self.strategy]))
        if self.strategy == "deepspeed":
            if cfg.model.device == "cpu":
                out.append(("distributed.strategy", "with model.device=cpu accelerate runs the processes as plain "
                            "CPU data parallelism, not DeepSpeed; choose ddp for CPU runs"))
            if importlib.util.find_spec("deepspeed") is None:
                out.append(("distributed.strategy", "DeepSpeed is not installed and not part of the studio's lock "
                            "(`pip install deepspeed` builds it from source, and its optimizers compile on first use, "
                            "which needs a CUDA toolkit); or choose ddp"))
        if self.offload == "optimizer_and_params" and self.strategy == "deepspeed" and self.deepspeed_zero_stage != 3:
            out.append(("distributed.offload", "offloading the weights needs ZeRO stage 3 "
                        "(distributed.deepspeed_zero_stage=3); stage 1-2 can offload the optimizer only"))
        if self.offload != "none" and self.strategy == "ddp":
            out.append(("distributed.offload", "DDP keeps everything on each GPU; offloading needs fsdp2 or deepspeed"))
        if self.strategy != "ddp" and cfg.model.quantization != "none":
            out.append(("distributed.strategy", f"a quantized base (model.quantization={cfg.model.quantization}) "
                        "cannot be sharded by FSDP2/DeepSpeed here; use ddp (each GPU holds the small "
                        "quantized base) or an unquantized base"))
        if self.strategy != "ddp" and cfg.adapter.backend_for(cfg.model.family) == "lycoris":
            out.append(("distributed.strategy", f"LyCORIS keeps its weights outside the model's layers, where "
                        f"{self.strategy} cannot shard them; use ddp, or a PEFT adapter type"))
        return out


class HubSection(Section):
    push_to_hub: bool = setting(False, "Upload the final adapter to the Hugging Face Hub when training "
                                "completes (needs a token: `HF_TOKEN` or `huggingface-cli login`).")
    model_id: str = setting("", "Hub repository, `user/name`. When set, the run is written into a sub-folder "
                            "named after the repository (`name`) inside the run folder, as SimpleTuner does, "
                            "so runs for different repositories never share a folder. Uploading needs "
                            "push_to_hub.")
    private: bool = setting(True, "Create the repository as private.", group="advanced")
    endpoint: str = setting("", "Hub address to download models from and upload to, for a mirror where "
                            "huggingface.co is hard to reach (e.g. `https://hf-mirror.com`). Set as "
                            "`HF_ENDPOINT` for the job. Empty = the official Hub (or HF_ENDPOINT from "
                            "your shell).", group="advanced")
    push_checkpoints: bool = setting(False, "Also upload every checkpoint as it is committed, into "
                                     "`checkpoints/<name>/` of the repository. Uploads run in the background; a "
                                     "failed one is a warning and training goes on.", group="advanced")

    def problems(self, cfg) -> list[tuple[str, str]]:
        out = []
        if self.push_to_hub and "/" not in self.model_id.strip("/"):
            out.append(("hub.model_id", "required as `user/name` when push_to_hub is on"))
        if self.push_checkpoints and not self.push_to_hub:
            out.append(("hub.push_checkpoints", "needs hub.push_to_hub"))
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            out.append(("hub.endpoint", f"expected an http(s) address, got {self.endpoint!r}"))
        return out
