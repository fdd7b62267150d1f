"""LoRA training: tokenization and loss masks, packing without cross-attention, config
values reaching the Trainer, loss going down, adapter reload, resume after a hard kill,
the multi-GPU launch branch, and the train rule run through Snakemake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import run_snakemake

from rekalm.common.io import write_jsonl
from rekalm.llm.hf import load_tokenizer
from rekalm.training.checkpoints import newest_complete_checkpoint, prepare_checkpoint_dir
from rekalm.training.data_parallel import data_parallel_command
from rekalm.training.train import (
    TrainingJob,
    TrainingSettings,
    build_trainer,
    build_training_arguments,
    plan_device,
    run_training_job,
    total_steps,
)
from rekalm.training.training_data import (
    IGNORE_INDEX,
    FlattenedRowCollator,
    PackedRowCollator,
    load_training_rows,
    pack_best_fit,
    tokenize_rows,
)

REPO = Path(__file__).resolve().parents[2]
MOVIES = ["The Matrix (1999)", "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Fargo (1996)", "Jaws (1975)"]

# Small but real: the tiny random Llama learns this in a few LoRA steps at a high rate.
TINY = dict(
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    seq_len=128,
    learning_rate=3e-2,
    epochs=4,
    per_device_batch_size=2,
    save_steps=2,
    gradient_checkpointing=False,
    warmup_steps=0,
)


def training_rows(tokenizer, count: int = 12) -> list[dict[str, str]]:
    """Ranking examples rendered with the chat template plus knowledge documents."""
    rows = []
    for index in range(count):
        liked, candidates = MOVIES[index % 3 : index % 3 + 2], MOVIES[2:6]
        prompt = tokenizer.apply_chat_template(
            [
                {"role": "system", "content": "You're operating as a movie recommendation system."},
                {"role": "user", "content": f"Liked: {', '.join(liked)}. Candidates: {', '.join(candidates)}."},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        answer = "Here a list:\n" + "\n".join(f"{rank}. {name}" for rank, name in enumerate(candidates, start=1))
        rows.append({"kind": "ranking", "prompt": prompt, "completion": answer})
        rows.append(
            {"kind": "collab", "prompt": "", "completion": f"People who like {liked[0]} also tend to like {liked[1]}."}
        )
    return rows


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir):
    return load_tokenizer(str(smollm2_tokenizer_dir))


def make_job(tmp_path: Path, base: Path, rows, **overrides) -> TrainingJob:
    train = tmp_path / "train.jsonl"
    if not train.exists():
        write_jsonl(rows, train)
    out = tmp_path / "out"
    return TrainingJob(
        train_jsonl=str(train),
        base_model_dir=str(base),
        adapter_dir=str(out / "adapter"),
        log_tsv=str(out / "train_log.tsv"),
        loss_png=str(out / "loss.png"),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        settings=TrainingSettings(**{**TINY, **overrides}),
        threads=1,
    )


# --------------------------------------------------------------------------- settings and data


def test_settings_from_config_reject_unknown_and_bad_values():
    with pytest.raises(ValueError, match=r"training.x: unknown setting\(s\) \['lora_rank'\]"):
        TrainingSettings.from_config({"lora_rank": 8}, where="training.x")
    with pytest.raises(ValueError, match="training.loss: expected 'completion_only' or 'full_sequence'"):
        TrainingSettings.from_config({"loss": "prompt_only"})
    with pytest.raises(ValueError, match="max_steps"):
        TrainingSettings.from_config({"max_steps": 0})
    with pytest.raises(ValueError, match=r"training.lr_scheduler: expected one of \[.*'cosine'.*\], got 'cosinus'"):
        TrainingSettings.from_config({"lr_scheduler": "cosinus"})
    with pytest.raises(ValueError, match=r"training.optim: expected one of"):
        TrainingSettings.from_config({"optim": "adam_w"})
    settings = TrainingSettings.from_config({"lora_r": 4, "resources": {"gpu": 1}})
    assert settings.lora_r == 4 and settings.lora_alpha == 128  # the paper's values are the defaults


def test_bad_training_rows_name_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"kind": "ranking", "prompt": "a", "completion": "b"}\n{"kind": "text", "prompt": null, "completion": "c"}\n'
    )
    with pytest.raises(ValueError, match=r"train.jsonl:2: field 'prompt' must be a string"):
        load_training_rows(path)


def test_completion_only_masks_the_prompt_and_appends_eos(tokenizer):
    rows = training_rows(tokenizer, count=1)
    tokenized = tokenize_rows(rows, tokenizer, seq_len=512, loss="completion_only")
    ranking, document = tokenized.examples
    prompt_ids = tokenizer(rows[0]["prompt"], add_special_tokens=False)["input_ids"]
    assert ranking["input_ids"][: len(prompt_ids)] == prompt_ids
    assert ranking["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert ranking["labels"][len(prompt_ids) :] == ranking["input_ids"][len(prompt_ids) :]
    assert ranking["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ranking["input_ids"][len(prompt_ids) : -1]) == rows[0]["completion"]
    assert document["labels"] == document["input_ids"]  # knowledge documents are learned whole

    full = tokenize_rows(rows, tokenizer, seq_len=512, loss="full_sequence")
    assert full.examples[0]["labels"] == full.examples[0]["input_ids"]


def test_long_prompts_are_dropped_and_long_answers_cut(tokenizer):
    rows = training_rows(tokenizer, count=1)
    prompt_length = len(tokenizer(rows[0]["prompt"], add_special_tokens=False)["input_ids"])
    tokenized = tokenize_rows(rows, tokenizer, seq_len=prompt_length, loss="completion_only")
    assert (tokenized.dropped, tokenized.truncated, len(tokenized.examples)) == (1, 0, 1)
    tokenized = tokenize_rows(rows, tokenizer, seq_len=prompt_length + 3, loss="completion_only")
    assert tokenized.dropped == 0 and tokenized.truncated == 1
    assert len(tokenized.examples[0]["input_ids"]) == prompt_length + 3


class BosTokenizer:
    """Stands in for a tokenizer that prepends BOS to plain text (Llama-3 does)."""

    bos_token, bos_token_id, eos_token_id = "<s>", 1, 2

    def __call__(self, texts, add_special_tokens=True):
        def encode(text):
            return ([self.bos_token_id] if add_special_tokens else []) + [ord(c) for c in text.replace("<s>", "\x01")]

        return {"input_ids": [encode(t) for t in texts] if isinstance(texts, list) else encode(texts)}


def test_bos_is_added_once_where_the_tokenizer_expects_it():
    rows = [{"prompt": "", "completion": "ab"}, {"prompt": "<s>q", "completion": "a"}]
    first, second = tokenize_rows(rows, BosTokenizer(), seq_len=16, loss="completion_only").examples
    assert first["input_ids"] == [1, ord("a"), ord("b"), 2]
    assert second["input_ids"] == [1, ord("q"), ord("a"), 2] and second["labels"][:2] == [IGNORE_INDEX] * 2


# --------------------------------------------------------------------------- packing


def test_best_fit_packing_fills_rows_and_keeps_every_example():
    lengths = [6, 4, 5, 5, 3, 7, 2, 8]
    rows = pack_best_fit(lengths, capacity=10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 4  # 40 tokens in 4 rows of 10: a perfect fit exists and is found
    assert pack_best_fit(lengths, capacity=10) == rows  # deterministic
    with pytest.raises(ValueError, match="example 0 has 11 tokens > seq_len 10"):
        pack_best_fit([11], capacity=10)


def test_packed_examples_do_not_attend_to_each_other(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    first = {"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, 7, 8, 9]}
    second = {"input_ids": [10, 11, 12], "labels": [IGNORE_INDEX, 11, 12]}
    batch = PackedRowCollator(pad_token_id=0)([{"segments": [first, second]}, {"segments": [second]}])
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 0, 1, 2, 3, 4]]
    assert batch["labels"].tolist()[0] == [IGNORE_INDEX, 6, 7, 8, 9, IGNORE_INDEX, 11, 12]
    assert batch["labels"].tolist()[1][3:] == [IGNORE_INDEX] * 5  # padding is never a target
    for attention in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation=attention).eval()
        with torch.no_grad():  # use_cache=False as in training: a KV cache disables packed masks
            packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
            alone = model(input_ids=torch.tensor([second["input_ids"]]), use_cache=False).logits
            leaky = model(input_ids=batch["input_ids"][:1], use_cache=False).logits  # plain causal: second sees first
        assert torch.allclose(packed[0, 5:], alone[0], atol=1e-5), attention
        assert torch.allclose(packed[1, :3], alone[0], atol=1e-5), attention
        assert not torch.allclose(leaky[0, 5:], alone[0], atol=1e-3)


def test_flash_attention_layout_flattens_the_batch():
    first = {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}
    second = {"input_ids": [8, 9], "labels": [8, 9]}
    batch = FlattenedRowCollator()([{"segments": [first]}, {"segments": [second, first]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 5, 6, 7]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9, IGNORE_INDEX, 6, 7]]


# --------------------------------------------------------------------------- trainer wiring


def test_config_values_reach_the_trainer(tmp_path, tiny_llama_dir, tokenizer):
    preset = {
        "lora_r": 4,
        "lora_alpha": 12,
        "lora_dropout": 0.07,
        "target_modules": ["q_proj", "v_proj"],
        "seq_len": 256,
        "learning_rate": 3e-4,
        "epochs": 2,
        "max_steps": 3,
        "per_device_batch_size": 3,
        "gradient_accumulation_steps": 2,
        "weight_decay": 0.02,
        "max_grad_norm": 0.5,
        "optim": "adamw_torch",
        "lr_scheduler": "cosine",
        "warmup_steps": 1,
        "seed": 7,
        "bf16": True,
        "tf32": True,
        "gradient_checkpointing": True,
        "packing": False,
        "loss": "full_sequence",
        "save_steps": 5,
        "save_total_limit": 1,
        "logging_steps": 2,
        "attn_implementation": "eager",
    }
    settings = TrainingSettings.from_config(preset)
    job = make_job(tmp_path, tiny_llama_dir, training_rows(tokenizer, 20))
    job = TrainingJob(**{**job.__dict__, "settings": settings})
    tokenized = tokenize_rows(load_training_rows(job.train_jsonl), tokenizer, settings.seq_len, settings.loss)
    trainer = build_trainer(job, tokenized, tokenizer, plan_device(settings, tiny_llama_dir))
    args = trainer.args
    assert (args.learning_rate, args.num_train_epochs, args.max_steps) == (3e-4, 2, 3)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (3, 2)
    assert (args.weight_decay, args.max_grad_norm, args.optim.value, args.lr_scheduler_type.value) == (
        0.02,
        0.5,
        "adamw_torch",
        "cosine",
    )
    assert (args.warmup_steps, args.seed, args.data_seed) == (1, 7, 7)
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert (args.save_steps, args.save_total_limit, args.logging_steps) == (5, 1, 2)
    assert args.output_dir == job.checkpoint_dir
    assert not args.bf16 and args.use_cpu  # bf16/tf32 apply on CUDA only
    lora = trainer.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (4, 12, 0.07)
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    assert trainer.model.config._attn_implementation == "eager"
    assert trainer.model.config.use_cache is False  # a KV cache would switch packed-sequence masks off
    assert len(trainer.train_dataset) == len(tokenized.examples)  # packing off: one example per item
    assert trainer.train_dataset[0]["labels"] == trainer.train_dataset[0]["input_ids"]  # full-sequence loss


def test_packing_and_auto_attention_on_cpu(tmp_path, tiny_llama_dir, tokenizer):
    job = make_job(tmp_path, tiny_llama_dir, training_rows(tokenizer, 20), seq_len=512)
    settings = job.settings
    plan = plan_device(settings, tiny_llama_dir)
    assert (plan.device, plan.bf16, plan.tf32, plan.attn_implementation) == ("cpu", False, False, "sdpa")
    tokenized = tokenize_rows(load_training_rows(job.train_jsonl), tokenizer, settings.seq_len, settings.loss)
    trainer = build_trainer(job, tokenized, tokenizer, plan)
    assert isinstance(trainer.data_collator, PackedRowCollator)
    assert len(trainer.train_dataset) < len(tokenized.examples) / 3
    assert trainer.args.max_steps == -1  # no cap: all epochs
    assert trainer.args.include_num_input_tokens_seen == "all"


def test_max_steps_is_a_cap_not_a_target(tiny_llama_dir):
    settings = TrainingSettings(epochs=2, per_device_batch_size=4, max_steps=100)
    plan = plan_device(settings, tiny_llama_dir)
    assert total_steps(rows=10, settings=settings, world_size=1) == 6
    assert build_training_arguments(settings, plan, "unused", rows=10).max_steps == -1
    assert build_training_arguments(settings, plan, "unused", rows=1000).max_steps == 100


# --------------------------------------------------------------------------- training runs


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_and_the_adapter_reloads(tmp_path, tiny_llama_dir, tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = make_job(tmp_path, tiny_llama_dir, training_rows(tokenizer, 8))
    result = run_training_job(job)
    log = pd.read_csv(job.log_tsv, sep="\t")
    assert list(log["step"]) == list(range(1, result.global_step + 1))
    # A random tiny model with tied, near-zero embeddings moves slowly: 10.7 -> 10.5 in 20 steps.
    assert log["loss"].tail(3).mean() < log["loss"].head(3).mean() - 0.1
    assert (log["tokens_per_second"] > 0).all() and (log["peak_memory_mb"] > 0).all()
    assert set(log["session"]) == {1}
    assert Path(job.loss_png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not Path(job.checkpoint_dir).exists()  # keep_checkpoints: false cleans up

    adapter = Path(job.adapter_dir)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    record = json.loads((adapter / "rekalm_training.json").read_text())
    assert (
        record["settings"]["learning_rate"] == TINY["learning_rate"]
        and record["result"]["global_step"] == result.global_step
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = torch.tensor([tokenizer(training_rows(tokenizer, 1)[0]["prompt"] + "Here a list:\n1.")["input_ids"]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, adapter).eval()
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-3)  # the reloaded adapter changes the model
    assert tuned.peft_config["default"].r == TINY["lora_r"]


KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from transformers import TrainerCallback
    from rekalm.training.train import TrainingJob, run_training_job

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like an OOM kill or scancel

    run_training_job(TrainingJob.from_dict(json.load(open(sys.argv[1]))), callbacks=[KillAt()])
    """)


@pytest.mark.slow
def test_training_resumes_after_a_hard_kill(tmp_path, tiny_llama_dir, tokenizer):
    rows = training_rows(tokenizer, 8)
    job = make_job(tmp_path / "interrupted", tiny_llama_dir, rows, max_steps=8)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(job_file), "5"], env=env, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert newest_complete_checkpoint(job.checkpoint_dir).name == "checkpoint-4"
    assert not Path(job.adapter_dir).exists()  # nothing half-written

    result = run_training_job(job)
    assert result.resumed_from.endswith("checkpoint-4") and result.global_step == 8
    log = pd.read_csv(job.log_tsv, sep="\t")
    assert list(log["step"]) == list(range(1, 9))
    assert list(log["session"]) == [1] * 4 + [2] * 4  # steps 1-4 from the checkpoint, 5-8 after resuming

    uninterrupted = make_job(tmp_path / "straight", tiny_llama_dir, rows, max_steps=8)
    run_training_job(uninterrupted)
    straight = pd.read_csv(uninterrupted.log_tsv, sep="\t")
    # Optimizer, scheduler, RNG and data order come back from the checkpoint: same curve.
    assert log["loss"].to_numpy() == pytest.approx(straight["loss"].to_numpy(), rel=1e-4)


def test_stale_or_incomplete_checkpoints_are_not_resumed(tmp_path, tiny_llama_dir, tokenizer):
    job = make_job(tmp_path, tiny_llama_dir, training_rows(tokenizer, 2))
    assert prepare_checkpoint_dir(job) is None
    folder = Path(job.checkpoint_dir)
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-4").mkdir()  # killed while saving: no trainer_state.json yet
    assert prepare_checkpoint_dir(job).name == "checkpoint-2"
    assert not (folder / "checkpoint-4").exists()

    changed = TrainingJob(**{**job.__dict__, "settings": TrainingSettings(**{**TINY, "learning_rate": 1e-3})})
    assert prepare_checkpoint_dir(changed) is None  # other settings: start over
    assert not (folder / "checkpoint-2").exists()
    interval_only = TrainingJob(
        **{**changed.__dict__, "settings": TrainingSettings(**{**TINY, "learning_rate": 1e-3, "save_steps": 7})}
    )
    (folder / "checkpoint-3").mkdir()
    (folder / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert prepare_checkpoint_dir(interval_only).name == "checkpoint-3"  # the save interval may change


def test_several_gpus_start_one_worker_each(tmp_path, tiny_llama_dir, tokenizer, monkeypatch):
    import torch

    import rekalm.training.train as train

    job = make_job(tmp_path, tiny_llama_dir, training_rows(tokenizer, 2), keep_checkpoints=True)
    job = TrainingJob(**{**job.__dict__, "threads": 8, "gpus": 4})
    launched = {}

    def fake_workers(command, env):
        launched.update(command=command, env=env)
        payload = {
            "global_step": 3,
            "resumed_from": None,
            "examples": 4,
            "dropped_examples": 0,
            "truncated_examples": 0,
            "packed_rows": 2,
            "train_runtime_s": 1.0,
            "device": "cuda",
        }
        (Path(job.checkpoint_dir) / train.RESULT_FILE).write_text(json.dumps(payload))

    monkeypatch.setattr(train, "plan_device", lambda *args: train.DevicePlan("cuda", True, True, "sdpa"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(train, "run_workers", fake_workers)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    result = run_training_job(job)
    command = launched["command"]
    assert command[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[-4:] == ["-m", "rekalm.training.train", "--job", str(Path(job.checkpoint_dir) / train.JOB_FILE)]
    worker_job = json.loads((Path(job.checkpoint_dir) / train.JOB_FILE).read_text())
    assert TrainingJob.from_dict({k: v for k, v in worker_job.items() if k != "resume_from"}) == TrainingJob(
        **{**job.__dict__, "threads": 2}
    )
    assert launched["env"]["OMP_NUM_THREADS"] == "2"  # 8 cores shared by 4 workers
    # The workers import exactly this process's rekalm, wherever the workflow runs.
    assert launched["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert worker_job["resume_from"] is None and result.global_step == 3
    assert data_parallel_command(2, "j.json")[-1] == "j.json"


# --------------------------------------------------------------------------- the rules


@pytest.mark.slow
def test_prepare_train_and_merge_rules_run_end_to_end(tmp_path, tiny_llama_dir, tokenizer):
    import yaml

    work = tmp_path / "work"
    write_jsonl(training_rows(tokenizer, 4), work / "results/toy/build_sets/no_kn/train.jsonl")
    config = {
        "trust_remote_code": False,
        "run": {"seeds": [22]},
        "models": {"tiny": {"source": "local", "path": str(tiny_llama_dir)}},
        "datasets": {"toy": {"model": "tiny", "training": "tiny"}},
        "training": {"tiny": {**TINY, "max_steps": 3, "resources": {"gpu": 0, "mem_mb": 2000, "runtime": 5}}},
        "merge": {
            "temporary": False,
            "dtype": "auto",
            "device": "auto",
            "tolerance": None,
            "gpu": 0,
            "mem_mb": 4000,
            "runtime": 30,
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    # The real rules and their input functions, on a config with only what they read.
    includes = "".join(
        f'include: "{REPO}/rules/{stage}.smk"\n' for stage in ("common", "prepare_model", "train", "merge")
    )
    (work / "Snakefile").write_text(includes, encoding="utf-8")
    targets = ["results/toy/merge/no_kn/model", "results/toy/train/no_kn/loss.png"]
    done = run_snakemake(work, targets, [work / "config.yaml"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((work / "results/models/tiny/base/rekalm_source.json").read_text())["source"] == "local"
    assert len(pd.read_csv(work / "results/toy/train/no_kn/train_log.tsv", sep="\t")) == 3
    check = json.loads((work / "results/toy/merge/no_kn/model/rekalm_merge_check.json").read_text())
    assert check["passed"] and check["dtype"] == "float32"
    assert "resuming" not in (work / "logs/toy/train/no_kn.log").read_text()
    assert (work / "logs/toy/train/no_kn.benchmark.tsv").is_file()
