"""What a Playground result carries so that it can be made again outside the studio: the diffusers /
transformers code with its exact settings, and (image families) a ComfyUI workflow in ComfyUI's API
format (the JSON that ComfyUI's "Queue Prompt" posts: node id -> class_type + inputs)."""
from __future__ import annotations

from pathlib import Path

from studio.registry.families import FAMILIES


def _pipeline(family: str) -> str:
    """The diffusers pipeline whose code reproduces a sample (UNet families: the studio samples them with
    that pipeline and an Euler scheduler); "" when no stand-alone snippet is written."""
    row = FAMILIES[family]
    return row.pipeline if "unet" in row.traits else ""


def reproduce_code(cfg, settings: dict) -> str:
    """Python that reproduces the result with the libraries alone (no studio import)."""
    from studio.families.paths import resolve_model_path

    model = resolve_model_path(cfg.model.path)
    adapter = settings["adapter_folder"]
    family = cfg.model.family
    if _pipeline(family):
        return _diffusers_code(cfg, settings, model, adapter)
    if FAMILIES[family].data == "text":
        return _transformers_code(cfg, settings, model, adapter)
    return (f"# {family}: no stand-alone library pipeline reproduces this family's sampling; the studio does:\n"
            f"#   {settings['reproduce_cli']}\n")


def _diffusers_code(cfg, s: dict, model: str, adapter: str) -> str:
    cls = _pipeline(cfg.model.family)
    extra = ", safety_checker=None, requires_safety_checker=False" if cls == "StableDiffusionPipeline" else ""
    pred = cfg.model.prediction_type
    sched_kw = f", prediction_type={pred!r}" if pred != "auto" else ""
    negative = f"negative_prompt={s['negative_prompt']!r}, " if s.get("negative_prompt") else ""
    # The studio samples with EulerDiscreteScheduler built from the model's scheduler config
    # (studio/families/sd.py `pipeline`), on the CPU generator seeded with the seed.
    return f'''import torch
from diffusers import {cls}, {s["scheduler"]}

pipe = {cls}.from_pretrained({model!r}, torch_dtype=torch.float32{extra})
pipe.scheduler = {s["scheduler"]}.from_config(pipe.scheduler.config{sched_kw})
pipe.load_lora_weights({adapter!r}, weight_name="adapter_model.safetensors")
image = pipe({s["prompt"]!r}, {negative}num_inference_steps={s["steps"]}, guidance_scale={s["guidance"]},
             width={s["width"]}, height={s["height"]}, generator=torch.Generator().manual_seed({s["seed"]})).images[0]
image.save("result.png")
'''


def _transformers_code(cfg, s: dict, model: str, adapter: str) -> str:
    chat = cfg.model.variant != "pretrain"
    text = ("tok.apply_chat_template([{\"role\": \"user\", \"content\": prompt}], tokenize=False, "
            "add_generation_prompt=True)" if chat else "prompt")
    sampling = (f"do_sample=True, temperature={s['temperature']}" if s["temperature"] > 0 else "do_sample=False")
    return f'''import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained({adapter!r})  # the tokenizer (and chat template) saved with the adapter
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({model!r}), {adapter!r}).eval()
prompt = {s["prompt"]!r}
enc = tok({text}, return_tensors="pt", add_special_tokens=False)
torch.manual_seed({s["seed"]})
ids = model.generate(**enc, max_new_tokens={s["max_new_tokens"]}, {sampling}, pad_token_id=tok.pad_token_id or tok.eos_token_id)
print(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
'''


def comfyui_workflow(cfg, s: dict, source: Path) -> dict | None:
    """ComfyUI API-format workflow: checkpoint -> LoRA (the kohya file) -> prompts -> KSampler -> save.

    ComfyUI draws its noise and spaces its Euler steps its own way, so the picture matches in content and
    settings, not bit for bit. The checkpoint name is the base model's folder name: put the model's
    single-file checkpoint under ComfyUI/models/checkpoints and the kohya file under models/loras."""
    if not _pipeline(cfg.model.family):
        return None
    kohya = sorted(Path(source).glob("*_kohya.safetensors"))
    lora_name = kohya[0].name if kohya else "adapter_kohya.safetensors"
    ckpt = Path(str(cfg.model.path).replace("tiny:", "tiny-")).name + ".safetensors"
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LoraLoader", "inputs": {"lora_name": lora_name, "strength_model": 1.0,
                                                     "strength_clip": 1.0, "model": ["1", 0], "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": s["prompt"], "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": s.get("negative_prompt", ""), "clip": ["2", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": s["width"], "height": s["height"],
                                                           "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"seed": s["seed"], "steps": s["steps"], "cfg": s["guidance"],
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"{cfg.job.name}", "images": ["7", 0]}},
    }
