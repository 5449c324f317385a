"""`distributed` and `hub` sections (FIELDS §16, §17)."""
from __future__ import annotations

from typing import Literal

from studio.config.fields import Section, setting


class DistributedSection(Section):
    num_processes: int = setting(1, "GPUs (processes) to train on. More than 1 starts the job with "
                                 "`accelerate launch`; the effective batch grows with it.", ge=1, le=64)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = setting(
        "ddp", "How several GPUs share the work: DDP copies the model to each GPU (simplest, fastest for "
        "adapters); FSDP shards weights to fit bigger models; DeepSpeed ZeRO shards optimizer state, "
        "gradients and weights.", group="advanced")
    gpu_ids: str = setting("", "Comma-separated GPU ids to use (e.g. `0,1`). Empty = all.",
                           group="advanced")
    deepspeed_zero_stage: int = setting(2, "DeepSpeed ZeRO stage: 1 shards optimizer state, 2 adds "
                                        "gradients, 3 adds the weights.", ge=0, le=3, group="advanced")
    accelerate_extra_args: str = setting("", "Extra arguments appended to `accelerate launch` "
                                         "(e.g. `--main_process_port 29501`).", group="advanced")

    def problems(self, cfg) -> list[tuple[str, str]]:
        ids = [part.strip() for part in self.gpu_ids.split(",") if part.strip()]
        if any(not part.isdigit() for part in ids):
            return [("distributed.gpu_ids", f"expected comma-separated integers, got {self.gpu_ids!r}")]
        if ids and len(ids) != self.num_processes:
            return [("distributed.gpu_ids", f"{len(ids)} GPU ids given but num_processes is "
                     f"{self.num_processes}; they must match")]
        return []


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
    push_checkpoints: bool = setting(False, "Also upload every checkpoint as it is written.",
                                     group="advanced")

    def problems(self, cfg) -> list[tuple[str, str]]:
        out = []
        if self.push_to_hub and "/" not in self.model_id.strip("/"):
            out.append(("hub.model_id", "required as `user/name` when push_to_hub is on"))
        if self.push_checkpoints and not self.push_to_hub:
            out.append(("hub.push_checkpoints", "needs hub.push_to_hub"))
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            out.append(("hub.endpoint", f"expected an http(s) address, got {self.endpoint!r}"))
        return out
