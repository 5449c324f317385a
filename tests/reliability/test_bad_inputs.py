"""Issue #18 "Keep them found": a table of bad inputs. Each row runs one command in this process and
asserts the exit code, that the message names the field or file and what is allowed, and that
nothing was created or changed (no run folder, no queue row). No row loads a model."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from reliability_helpers import run_cli, write_bomb_png, write_images

TRAIN, ADD = ["train"], ["queue", "add"]


def fill(text: str, ws) -> str:
    """`{ws.root}` / `{ws.data}` -> the workspace's folders (JSON braces in values stay as they are)."""
    return text.replace("{ws.root}", str(ws.root)).replace("{ws.data}", str(ws.data))


def sets(*items):
    """`train CONFIG --set a --set b` for the workspace's valid config."""
    def argv(ws):
        return [*TRAIN, ws.config, *[x for item in items for x in ("--set", fill(item, ws))]]
    return argv


def with_data(make, *extra, family="sd15", command=TRAIN):
    """A dataset written by `make(folder)` (images, or a JSONL file for the causal LM)."""
    def argv(ws):
        path = make(ws.root / "bad_data")
        model = ["--set", "model.family=causal_lm", "--set", "model.path=tiny:causal_lm"] if family == "causal_lm" else []
        return [*command, ws.config, "--set", f"data.path={path}", *model, *extra]
    return argv


def with_model(make):
    def argv(ws):
        return [*TRAIN, ws.config, "--set", f"model.path={make(ws.root)}"]
    return argv


def with_config(payload):
    def argv(ws):
        return [*TRAIN, ws.write_config("given.json", payload)]
    return argv


# ---- bad files --------------------------------------------------------------------------------------
def bomb(folder):
    folder.mkdir()
    write_bomb_png(folder / "huge.png", 11000)  # 121 million pixels in ~120 KB
    (folder / "huge.txt").write_text("a huge picture")
    return folder


def corrupt_png(folder):
    write_images(folder, 1)
    (folder / "broken.png").write_bytes((folder / "img0.png").read_bytes()[:60])
    (folder / "broken.txt").write_text("broken")
    return folder


def text_as_png(folder):
    write_images(folder, 1)
    (folder / "notes.png").write_text("this is not a picture")
    (folder / "notes.txt").write_text("notes")
    return folder


def gif(folder):
    write_images(folder, 1)
    Image.new("RGB", (64, 64)).save(folder / "anim.gif")
    return folder


def empty_folder(folder):
    folder.mkdir()
    return folder


def no_captions(folder):
    write_images(folder, 2)
    for caption in folder.glob("*.txt"):
        caption.unlink()
    return folder


def jsonl(text):
    def make(folder):
        folder.mkdir()
        path = folder / "chat.jsonl"
        path.write_text(text, encoding="utf-8")
        return path
    return make


def random_bin(root):
    path = root / "model.bin"
    path.write_bytes(bytes(range(256)) * 64)
    return path


def garbage_safetensors(root):
    path = root / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    return path


def lora_safetensors(root):
    import torch
    from safetensors.torch import save_file

    path = root / "my_lora.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 4)}, str(path))
    return path


def pickle_model(root):
    folder = root / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    return folder


def folder_without_unet(root):
    folder = root / "half_model"
    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / part).mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    return folder


def file_as_output(ws):
    (ws.root / "taken").write_text("a file")
    return [*TRAIN, ws.config, "--set", f"job.output_dir={ws.root / 'taken'}"]


def under_a_file(ws):
    (ws.root / "taken").write_text("a file")
    return [*TRAIN, ws.config, "--set", f"job.output_dir={ws.root / 'taken' / 'run'}"]


def finished_run(ws):
    ws.run_dir.mkdir()
    (ws.run_dir / "adapter_model.safetensors").write_bytes(b"old adapter")
    ck = ws.run_dir / "checkpoint-8"
    ck.mkdir()
    (ck / "manifest.json").write_text('{"step": 8}')
    return [*TRAIN, ws.config]


def finished_run_queued(ws):
    finished_run(ws)
    return [*ADD, ws.config]


CASES = [
    # id, argv(ws), exit code, what the message must name (formatted with ws)
    ("lr-negative", sets("training.learning_rate=-1"), 2, ["training.learning_rate", "greater than"]),
    ("lr-text", sets("training.learning_rate=fast"), 2, ["training.learning_rate", "number"]),
    ("max-steps-negative", sets("training.max_steps=-5"), 2, ["training.max_steps", "greater than"]),
    ("batch-zero", sets("training.batch_size=0"), 2, ["training.batch_size", "greater than"]),
    ("accum-zero", sets("training.gradient_accumulation_steps=0"), 2, ["training.gradient_accumulation_steps", "greater"]),
    ("seed-text", sets("training.seed=abc"), 2, ["training.seed", "integer"]),
    ("grad-norm-text", sets("training.max_grad_norm=big"), 2, ["training.max_grad_norm", "number"]),
    ("optimizer-unknown", sets("optimizer.name=sgdx"), 2, ["optimizer.name", "adamw"]),
    ("scheduler-unknown", sets("scheduler.name=wobbly"), 2, ["scheduler.name", "cosine"]),
    ("adapter-unknown", sets("adapter.type=mystery"), 2, ["adapter.type", "lora"]),
    ("rank-zero", sets("adapter.rank=0"), 2, ["adapter.rank", "greater"]),
    ("targets-bad-json-list", sets('adapter.target_modules=["to_q",'), 2, ["adapter.target_modules", "valid JSON"]),
    ("targets-bad-json-object", sets('adapter.target_modules={"to_q":'), 2, ["adapter.target_modules", "valid JSON"]),
    ("prompt-bad-json-string", sets('sampling.prompts="unclosed'), 2, ["sampling.prompts", "valid JSON"]),
    ("family-unknown", sets("model.family=sd9"), 2, ["model.family", "sd15"]),
    ("tiny-unknown", sets("model.path=tiny:nothing"), 2, ["model.path", "tiny:sd15"]),
    ("model-missing", sets("model.path={ws.root}/no_model"), 2, ["model.path", "not found", "hub id"]),
    ("model-gguf", sets("model.path=weights.gguf"), 2, ["model.path", "inference-only"]),
    ("device-unknown", sets("model.device=tpu"), 2, ["model.device", "cuda"]),
    ("precision-unknown", sets("memory.mixed_precision=fp7"), 2, ["memory.mixed_precision", "bf16"]),
    ("data-missing", sets("data.path={ws.root}/nowhere"), 2, ["data.path", "not found"]),
    ("data-empty", sets("data.path="), 2, ["data.path", "required"]),
    ("eval-missing", sets("data.eval_path={ws.root}/nowhere"), 2, ["data.eval_path", "not found"]),
    ("resolution-zero", sets("data.resolution=0"), 2, ["data.resolution", "greater"]),
    ("on-bad-file-unknown", sets("data.on_bad_file=maybe"), 2, ["data.on_bad_file", "skip"]),
    ("min-over-max-side", sets("data.min_image_side=5000", "data.max_image_side=100"), 2,
     ["data.min_image_side", "must not exceed"]),
    ("save-steps-zero", sets("checkpointing.save_steps=0"), 2, ["checkpointing.save_steps", "greater"]),
    ("max-checkpoints-negative", sets("checkpointing.max_checkpoints=-1"), 2, ["checkpointing.max_checkpoints"]),
    ("resume-from-nothing", sets("checkpointing.resume_from={ws.root}/nothing"), 2,
     ["checkpointing.resume_from", "manifest.json"]),
    ("logging-steps-zero", sets("logging.logging_steps=0"), 2, ["logging.logging_steps", "greater"]),
    ("section-unknown", sets("foo.bar=1"), 2, ["foo.bar", "section among"]),
    ("key-unknown", sets("training.bogus=1"), 2, ["training.bogus", "unknown setting"]),
    ("override-without-equals", sets("training.max_steps"), 2, ["training.max_steps", "section.key=value"]),
    ("override-not-a-section", sets("training.max_steps.x=1"), 2, ["training.max_steps", "not a section"]),
    ("four-bad-fields-at-once", sets("training.learning_rate=-1", "adapter.rank=0", "optimizer.name=nope",
                                     "data.path={ws.root}/missing_data"), 2,
     ["training.learning_rate", "adapter.rank", "optimizer.name", "data.path"]),
    ("output-is-a-file", file_as_output, 2, ["job.output_dir", "is a file", "folder"]),
    ("output-under-a-file", under_a_file, 2, ["job.output_dir", "is a file"]),
    ("output-inside-dataset", sets("job.output_dir={ws.data}/run"), 2, ["job.output_dir", "inside the dataset"]),
    ("output-holds-finished-run", finished_run, 2, ["job.output_dir", "auto_resume", "job.overwrite"]),
    # files: the config itself, model folders and files
    ("config-missing", lambda ws: [*TRAIN, ws.root / "none.json"], 2, ["none.json", "not found"]),
    ("config-not-json", with_config("{not json"), 2, ["given.json", "not valid JSON"]),
    ("config-a-list", with_config([1, 2]), 2, ["given.json", "JSON object"]),
    ("config-unknown-section", with_config({"trainig": {"max_steps": 2}}), 2, ["trainig", "unknown setting"]),
    ("model-random-bin", with_model(random_bin), 2, ["model.path", "model.bin", ".safetensors", "diffusers folder"]),
    ("model-garbage-safetensors", with_model(garbage_safetensors), 2, ["model.path", "not a readable safetensors"]),
    ("model-lora-file", with_model(lora_safetensors), 2, ["model.path", "no UNet weights"]),
    ("model-folder-without-unet", with_model(folder_without_unet), 2, ["model.path", "unet", "diffusers folder"]),
    ("llm-folder-without-config", lambda ws: [*with_data(jsonl('{"text": "x"}\n'), family="causal_lm")(ws),
                                               "--set", f"model.path={ws.root}"], 2, ["model.path", "config.json"]),
    ("llm-pickle-only", lambda ws: [*with_data(jsonl('{"text": "x"}\n'), family="causal_lm")(ws),
                                    "--set", f"model.path={pickle_model(ws.root)}"], 2,
     ["model.path", "pytorch_model.bin", ".safetensors"]),
    # datasets
    ("image-bomb", with_data(bomb, "--set", "data.on_bad_file=error"), 2, ["huge.png", "million pixels", "limit"]),
    ("image-bomb-only-file", with_data(bomb), 2, ["data.path", "no usable image"]),
    ("image-truncated", with_data(corrupt_png, "--set", "data.on_bad_file=error"), 2, ["broken.png", "data.on_bad_file"]),
    ("image-is-text", with_data(text_as_png, "--set", "data.on_bad_file=error"), 2, ["notes.png", "not an image"]),
    ("image-gif", with_data(gif, "--set", "data.on_bad_file=error"), 2, ["anim.gif", ".png"]),
    ("image-folder-empty", with_data(empty_folder), 2, ["data.path", "no usable image", ".png"]),
    ("image-no-captions", with_data(no_captions, "--set", "data.on_bad_file=error"), 2, ["img0.png", "no caption"]),
    ("chat-empty", with_data(jsonl(""), family="causal_lm"), 2, ["data.path", "no conversations", "messages"]),
    ("chat-malformed", with_data(jsonl('{"messages": [\n'), family="causal_lm"), 2,
     ["data.path", "chat.jsonl", "line 1", "not valid JSON"]),
    ("chat-wrong-keys", with_data(jsonl('{"question": "hi", "answer": "yo"}\n'), family="causal_lm"), 2,
     ["data.path", "line 1", "instruction"]),
    ("chat-not-object", with_data(jsonl('[1, 2]\n'), family="causal_lm"), 2, ["data.path", "line 1", "JSON object"]),
    ("chat-bad-role", with_data(jsonl(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n"),
                                family="causal_lm"), 2, ["data.path", "robot", "allowed"]),
    ("chat-no-assistant", with_data(jsonl(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n"),
                                    family="causal_lm"), 2, ["data.path", "no assistant turn"]),
    ("songs-folder-empty", lambda ws: [*with_data(empty_folder)(ws), "--set", "model.family=acestep",
                                       "--set", "model.path=tiny:acestep"], 2, ["data.path", "no usable songs", ".wav"]),
    # other commands and arguments
    ("tiny-model-unknown", lambda ws: ["tiny-model", "sd99", ws.root / "m"], 2, ["sd99", "sd15"]),
    ("command-unknown", lambda ws: ["trian", ws.config], 2, ["invalid choice", "train"]),
    ("train-without-config", lambda ws: ["train"], 2, ["config", "required"]),
    ("preprocess-data-missing", lambda ws: ["preprocess", ws.config, "--set", f"data.path={ws.root}/none"], 2,
     ["data.path", "not found"]),
    ("estimate-data-missing", lambda ws: ["estimate", ws.config, "--set", f"data.path={ws.root}/none"], 2,
     ["data.path", "not found"]),
    ("queue-add-data-missing", lambda ws: [*ADD, ws.config, "--set", f"data.path={ws.root}/none"], 2,
     ["data.path", "not found"]),
    ("queue-add-bad-json", lambda ws: [*ADD, ws.config, "--set", "adapter.target_modules=[to_q"], 2,
     ["adapter.target_modules", "valid JSON"]),
    ("queue-add-bad-name", lambda ws: [*ADD, ws.config, "--name", "no spaces/here"], 2, ["job.name", "letters"]),
    ("queue-add-bad-kind", lambda ws: [*ADD, ws.config, "--kind", "bake"], 2, ["--kind", "train"]),
    ("queue-add-output-is-file", lambda ws: [*ADD, *file_as_output(ws)[1:]], 2, ["job.output_dir", "is a file"]),
    ("queue-add-finished-run", finished_run_queued, 2, ["job.output_dir", "auto_resume"]),
    ("queue-stop-unknown-id", lambda ws: ["queue", "stop", "999"], 1, ["999", "queue list"]),
    ("queue-id-not-a-number", lambda ws: ["queue", "stop", "first"], 2, ["id", "invalid int"]),
    ("queue-setting-negative", lambda ws: ["queue", "settings", "queue.stop_grace_s=-1"], 2,
     ["queue.stop_grace_s", "seconds >= 0"]),
    ("queue-setting-unknown", lambda ws: ["queue", "settings", "queue.colour=red"], 2,
     ["queue.colour", "auto_resume_interrupted"]),
    ("export-format-unknown", lambda ws: ["export", ws.root, "--format", "zip"], 2, ["--format", "kohya"]),
]


@pytest.mark.parametrize("argv, code, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_named(ws, capsys, argv, code, needles):
    args = argv(ws)  # may write the bad file first
    before = ws.snapshot()
    result = run_cli(capsys, *args)
    assert result.rc == code, result.text
    for needle in needles:
        assert fill(needle, ws) in result.text, (needle, result.text)
    assert "Traceback" not in result.text
    assert ws.snapshot() == before  # no run folder, no queue row, nothing changed
    assert not ws.run_dir.exists() or ws.snapshot()["files"] == before["files"]


def test_the_table_is_large_enough():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
