"""Inference on a tiny random Llama: score mode (KV-cache reuse) against brute force, generate
mode with sized budgets, merged vs adapter loading, resumable chunks, output formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rekalm.common.io import write_jsonl
from rekalm.common.parse_counts import PARSE_COUNT_COLUMNS
from rekalm.common.tables import run_from_predictions
from rekalm.ranking import generation, infer, scoring
from rekalm.ranking.generation import generation_budget
from rekalm.ranking.infer import load_model, predictions_from_generations, run_inference
from rekalm.ranking.inference_inputs import InferenceSettings, UserPrompt, read_test_prompts
from rekalm.ranking.scoring import candidate_token_ids, score_candidates

ANSWER_PREFIX = "Here a list:\n1. "
NAMES = [
    "Matrix, The (1999)",
    "Toy Story (1995)",
    "Amélie (2001)",
    "Heat (1995)",
    "Star Wars: Episode IV - A New Hope (1977)",
    "M",
]


def render(tokenizer, liked: list[str], candidates: list[str]) -> str:
    user = (
        "I like the following items:\n" + "\n".join(liked) + "\n\nRank the following items:\n" + "\n".join(candidates)
    )
    messages = [
        {"role": "system", "content": "You're operating as a movie recommendation system."},
        {"role": "user", "content": user},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def write_test_set(path: Path, tokenizer, n_users: int = 5) -> list[dict]:
    rows = []
    for index in range(n_users):
        names = NAMES[index % 3 : index % 3 + 3 + index % 2]  # 3 or 4 candidates, varying lengths
        candidates = [{"item": f"i{NAMES.index(name)}", "name": name} for name in names]
        rows.append(
            {
                "user": f"u{index}",
                "prompt": render(tokenizer, ["Heat (1995)"], names),
                "answer_prefix": ANSWER_PREFIX,
                "candidates": candidates,
            }
        )
    write_jsonl(rows, path)
    return rows


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir: Path):
    model, tokenizer, device = load_model(tiny_llama_dir, dtype="float32", device="cpu")
    return model, tokenizer, device


def brute_force_scores(model, tokenizer, context: str, names: list[str]) -> np.ndarray:
    """Re-encode prompt + candidate for every candidate: the reference for the cached path."""
    import torch

    prefix, continuations = candidate_token_ids(tokenizer, context, names)
    scores = []
    for continuation in continuations:
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([prefix + continuation])).logits[0].float(), dim=-1)
        scores.append(np.mean([logprobs[len(prefix) - 1 + j, token].item() for j, token in enumerate(continuation)]))
    return np.array(scores)


# --- settings and test prompts ---------------------------------------------------------------


def test_settings_from_presets() -> None:
    settings = InferenceSettings.from_config(
        {"mode": "generate", "batch_size": 4, "resources": {"gpu": 1, "mem_mb": 1000, "runtime": 60}}
    )
    assert settings.mode == "generate" and settings.batch_size == 4 and settings.load == "merged"
    for bad in (
        {"mode": "beam"},
        {"load": "lora"},
        {"dtype": "int4"},
        {"batch_size": 0},
        {"fuzzy_threshold": 101},
        {"max_new_tokens": 0},
    ):
        with pytest.raises(ValueError, match="inference"):
            InferenceSettings.from_config(bad)
    with pytest.raises(ValueError, match="unknown key"):
        InferenceSettings.from_config({"temperature": 0.3})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "answer_prefix": "a", "candidates": []}, "'user'"),
        ({"user": "u", "prompt": 3, "answer_prefix": "a", "candidates": []}, "'prompt'"),
        ({"user": "u", "prompt": "p", "answer_prefix": "a", "candidates": [{"item": "x"}]}, "candidate"),
        (
            {
                "user": "u",
                "prompt": "p",
                "answer_prefix": "a",
                "candidates": [{"item": "x", "name": "X"}, {"item": "x", "name": "Y"}],
            },
            "twice",
        ),
    ],
)
def test_bad_test_rows_name_file_and_field(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "test.jsonl"
    write_jsonl([row], path)
    with pytest.raises(ValueError, match=message) as error:
        read_test_prompts(path)
    assert "test.jsonl: row 1" in str(error.value)


def test_duplicate_users_are_rejected(tmp_path: Path) -> None:
    row = {"user": "u", "prompt": "p", "answer_prefix": "a", "candidates": []}
    write_jsonl([row, row], tmp_path / "test.jsonl")
    with pytest.raises(ValueError, match="appears twice"):
        read_test_prompts(tmp_path / "test.jsonl")


# --- score mode ------------------------------------------------------------------------------


def test_candidates_are_tokenized_jointly_with_the_prefix(tiny) -> None:
    _, tokenizer, _ = tiny
    context = render(tokenizer, ["Heat (1995)"], NAMES) + ANSWER_PREFIX
    prefix, continuations = candidate_token_ids(tokenizer, context, NAMES)
    joint = tokenizer(context + NAMES[1] + "\n", add_special_tokens=False)["input_ids"]
    assert prefix + continuations[1] == joint  # exactly the tokens training saw
    assert tokenizer.decode(continuations[1]).endswith("Toy Story (1995)\n")


@pytest.mark.parametrize("packed", [True, False], ids=["packed-row", "padded-batch"])
@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_cached_scores_equal_full_reencoding(tiny, batch_size: int, packed: bool) -> None:
    model, tokenizer, device = tiny
    context = render(tokenizer, ["Heat (1995)"], NAMES) + ANSWER_PREFIX
    cached = score_candidates(model, tokenizer, context, NAMES, batch_size, device, packed=packed)
    np.testing.assert_allclose(cached, brute_force_scores(model, tokenizer, context, NAMES), rtol=0, atol=1e-4)


def test_packed_scoring_with_eager_attention(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    _, tokenizer, device = load_model(tiny_llama_dir, dtype="float32", device="cpu")
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()
    context = render(tokenizer, [], NAMES) + ANSWER_PREFIX
    assert scoring._packing_supported(eager)  # the additive-mask path
    np.testing.assert_allclose(
        score_candidates(eager, tokenizer, context, NAMES, 4, device),
        brute_force_scores(eager, tokenizer, context, NAMES),
        atol=1e-4,
    )


def test_scores_do_not_depend_on_candidate_order(tiny) -> None:
    model, tokenizer, device = tiny
    context = render(tokenizer, [], NAMES) + ANSWER_PREFIX
    forward = score_candidates(model, tokenizer, context, NAMES, 3, device)
    backward = score_candidates(model, tokenizer, context, NAMES[::-1], 3, device)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    assert score_candidates(model, tokenizer, context, [], 3, device).shape == (0,)


# --- generate mode ---------------------------------------------------------------------------


def test_generation_budget_grows_with_the_candidate_list(tiny) -> None:
    _, tokenizer, _ = tiny
    settings = InferenceSettings(mode="generate", tokens_per_candidate=2, token_slack=10)
    few, many = generation_budget(tokenizer, NAMES[:2], settings), generation_budget(tokenizer, NAMES * 50, settings)
    full_list = "\n".join(f"{rank}. {name}" for rank, name in enumerate(NAMES * 50, start=1))
    assert many >= len(tokenizer(full_list, add_special_tokens=False)["input_ids"]) + 2 * 300 + 10
    assert many > 512 > few  # the original's fixed 512 could not list 300 candidates
    assert generation_budget(tokenizer, NAMES * 50, InferenceSettings(max_new_tokens=512)) == 512


def test_left_padded_batches_generate_what_single_prompts_do(tiny) -> None:
    model, tokenizer, device = tiny
    prompts = [
        UserPrompt(
            f"u{i}",
            render(tokenizer, ["Heat (1995)"] * (i + 1), NAMES[: i + 2]),
            ANSWER_PREFIX,
            tuple(f"i{j}" for j in range(i + 2)),
            tuple(NAMES[: i + 2]),
        )
        for i in range(3)
    ]

    def answers(batch_size: int) -> list[str]:
        settings = InferenceSettings(mode="generate", max_new_tokens=6, batch_size=batch_size)
        return generation.generate_answers(model, tokenizer, device, prompts, settings, lambda n: None)[0]

    batched, single = answers(3), answers(1)
    assert batched == single
    assert all(
        answer.startswith(ANSWER_PREFIX.rstrip()) for answer in batched
    )  # the prefix's tokens every trained answer has


def test_generations_become_complete_flagged_lists() -> None:
    prompts = [
        UserPrompt("u1", "p", ANSWER_PREFIX, ("a", "b", "c"), ("Toy Story", "Heat", "Amélie")),
        UserPrompt("u2", "p", ANSWER_PREFIX, ("x",), ("Heat",)),
    ]
    raw = pd.DataFrame(
        {
            "user": ["u2", "u1"],
            "text": ["¯\\_(ツ)_/¯", "Here a list:\n1. Amelie\n2. Amelie\n3. Jaws"],
            "n_budget_cut": [0, 0],
            "n_context_cut": [0, 0],
        }
    )
    predictions = predictions_from_generations(prompts, raw, threshold=85)
    u1 = predictions[predictions["user"] == "u1"]
    assert u1["item"].tolist() == ["c", "a", "b"] and u1["source"].tolist() == ["model", "appended", "appended"]
    assert u1["rank"].tolist() == [1, 2, 3] and u1["score"].is_monotonic_decreasing
    assert u1.iloc[0][list(PARSE_COUNT_COLUMNS)].tolist() == [3, 1, 0, 1, 1, 2]
    u2 = predictions[predictions["user"] == "u2"]
    assert u2["source"].tolist() == ["appended"] and int(u2["n_hallucinated"].iloc[0]) == 1
    with pytest.raises(ValueError, match="no generation"):
        predictions_from_generations(prompts, raw.iloc[:1], threshold=85)


# --- merged model vs base + adapter ----------------------------------------------------------


@pytest.mark.slow
def test_adapter_and_merged_model_rank_alike(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    # init_lora_weights=False: a non-zero update, so the adapter really changes the scores
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path / "merged")

    context = None
    results = {}
    for name, (model_dir, adapter_dir) in {
        "base": (tiny_llama_dir, None),
        "adapter": (tiny_llama_dir, tmp_path / "adapter"),
        "merged": (tmp_path / "merged", None),
    }.items():
        model, tokenizer, device = load_model(model_dir, adapter_dir, dtype="float32", device="cpu")
        context = context or render(tokenizer, ["Heat (1995)"], NAMES) + ANSWER_PREFIX
        results[name] = score_candidates(model, tokenizer, context, NAMES, 4, device)
    np.testing.assert_allclose(results["adapter"], results["merged"], atol=1e-4)
    assert np.abs(results["adapter"] - results["base"]).max() > 1e-3


# --- the stage: chunks, resumption, outputs --------------------------------------------------


def test_run_inference_score_mode_outputs(tiny_llama_dir: Path, tiny, tmp_path: Path) -> None:
    _, tokenizer, _ = tiny
    rows = write_test_set(tmp_path / "test.jsonl", tokenizer)
    settings = InferenceSettings(mode="score", chunk_size=2, batch_size=3, dtype="float32", device="cpu")
    predictions, run = run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / "chunks", threads=1)
    assert list(predictions.columns) == [
        "user",
        "item",
        "rank",
        "score",
        "source",
        *PARSE_COUNT_COLUMNS,
        "n_context_cut",
        "n_budget_cut",
    ]
    assert predictions["rank"].dtype == np.int32 and predictions["score"].dtype == np.float64
    assert sorted((tmp_path / "chunks").glob("chunk-*.parquet")) == [
        tmp_path / "chunks" / f"chunk-{i:05d}.parquet" for i in range(3)
    ]
    for row in rows:
        mine = predictions[predictions["user"] == row["user"]]
        assert sorted(mine["item"]) == sorted(c["item"] for c in row["candidates"])  # complete, no duplicates
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert mine["score"].is_monotonic_decreasing and (mine["source"] == "model").all()
        assert (mine[[*PARSE_COUNT_COLUMNS, "n_context_cut", "n_budget_cut"]] == 0).all().all()
        # run.json: ranx's {user: {item: score}} with distinct scores in rank order
        assert list(run[row["user"]]) == mine["item"].tolist()
        assert len(set(run[row["user"]].values())) == len(mine)
    assert json.loads(json.dumps(run)) == run


def test_killed_run_resumes_from_finished_chunks(
    tiny_llama_dir: Path, tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tokenizer, _ = tiny
    write_test_set(tmp_path / "test.jsonl", tokenizer)
    settings = InferenceSettings(mode="score", chunk_size=2, dtype="float32", device="cpu")
    reference, _ = run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / "reference")

    calls: list[list[str]] = []
    real_score_chunk = infer.score_chunk

    def dies_on_second_chunk(model, tokenizer, device, prompts, settings, advance):
        calls.append([p.user for p in prompts])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_score_chunk(model, tokenizer, device, prompts, settings, advance)

    monkeypatch.setattr(infer, "score_chunk", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / "chunks")
    assert [p.name for p in sorted((tmp_path / "chunks").glob("chunk-*"))] == [
        "chunk-00000.parquet"
    ]  # nothing half-written

    def counts_chunks(model, tokenizer, device, prompts, settings, advance):
        calls.append([p.user for p in prompts])
        return real_score_chunk(model, tokenizer, device, prompts, settings, advance)

    calls.clear()
    monkeypatch.setattr(infer, "score_chunk", counts_chunks)
    resumed, _ = run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / "chunks")
    assert calls == [["u2", "u3"], ["u4"]]  # the finished chunk was not recomputed
    pd.testing.assert_frame_equal(resumed, reference)

    # other settings: the old chunks are not reused
    calls.clear()
    run_inference(
        tmp_path / "test.jsonl",
        tiny_llama_dir,
        InferenceSettings(mode="score", chunk_size=5, dtype="float32", device="cpu"),
        tmp_path / "chunks",
    )
    assert calls == [["u0", "u1", "u2", "u3", "u4"]]
    assert [p.name for p in sorted((tmp_path / "chunks").glob("chunk-*"))] == ["chunk-00000.parquet"]


def test_finished_run_needs_no_model(
    tiny_llama_dir: Path, tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tokenizer, _ = tiny
    write_test_set(tmp_path / "test.jsonl", tokenizer, n_users=2)
    settings = InferenceSettings(mode="score", dtype="float32", device="cpu")
    first, _ = run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / "chunks")
    monkeypatch.setattr(infer, "load_model", lambda *a, **k: pytest.fail("model loaded although every chunk was done"))
    again, _ = run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / "chunks")
    pd.testing.assert_frame_equal(first, again)


def test_chunks_of_other_code_are_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunk fingerprint covers every module whose code decides a chunk's content: the
    job, its inputs, scoring, generation and the tokenization shared with training."""
    from rekalm.llm import prompts
    from rekalm.ranking import inference_inputs

    test = tmp_path / "test.jsonl"
    test.write_text('{"user": "u1", "prompt": "p", "answer_prefix": "a", "candidates": []}\n', encoding="utf-8")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}", encoding="utf-8")
    settings = InferenceSettings()
    seen = {infer.inference_fingerprint(test, tmp_path / "model", None, settings)}
    for module in (infer, inference_inputs, scoring, generation, prompts):
        edited = tmp_path / f"{module.__name__}.py"
        edited.write_text(Path(module.__file__).read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
        monkeypatch.setattr(module, "__file__", str(edited))
        seen.add(infer.inference_fingerprint(test, tmp_path / "model", None, settings))
    assert len(seen) == 6  # each edit gave a new fingerprint


@pytest.mark.slow
def test_run_inference_generate_mode(tiny_llama_dir: Path, tiny, tmp_path: Path) -> None:
    _, tokenizer, _ = tiny
    rows = write_test_set(tmp_path / "test.jsonl", tokenizer, n_users=3)
    settings = InferenceSettings(
        mode="generate", batch_size=2, chunk_size=2, max_new_tokens=12, dtype="float32", device="cpu"
    )
    predictions, run = run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / "chunks")
    raw = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "chunks").glob("chunk-*.parquet"))])
    assert (
        list(raw.columns) == ["user", "text", "n_budget_cut", "n_context_cut"]
        and raw["text"].str.startswith(ANSWER_PREFIX.rstrip()).all()
    )
    for row in rows:  # a random model writes nonsense: the lists are still complete
        mine = predictions[predictions["user"] == row["user"]]
        assert sorted(mine["item"]) == sorted(c["item"] for c in row["candidates"])
        assert int(mine["n_appended"].iloc[0]) == int((mine["source"] == "appended").sum())
    assert set(run) == {row["user"] for row in rows}
    assert run_from_predictions(predictions) == run


# --- greedy decoding and the context rule ------------------------------------------------------


def greedy_loop(model, input_ids: list[int], budget: int, eos: int) -> list[int]:
    """The reference: argmax of the full re-encoding, one token at a time."""
    import torch

    ids = list(input_ids)
    for _ in range(budget):
        with torch.no_grad():
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(token)
        if token == eos:
            break
    return ids[len(input_ids) :]


def test_generate_mode_is_greedy_whatever_the_model_config_says(tiny_llama_dir: Path, tiny) -> None:
    import torch
    from transformers import AutoConfig, GenerationConfig, LlamaForCausalLM

    _, tokenizer, device = tiny
    torch.manual_seed(0)  # larger random weights than the fixture's: logits a penalty can reorder
    model = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_llama_dir, initializer_range=0.1)).eval()
    # An instruct checkpoint's generation_config.json: sampling and a repetition penalty.
    own = GenerationConfig(
        do_sample=True, repetition_penalty=1.3, top_k=5, temperature=0.7, eos_token_id=tokenizer.eos_token_id
    )
    model.generation_config = own
    prompts = [
        UserPrompt(
            f"u{i}", render(tokenizer, ["Heat (1995)"], NAMES[i:]), ANSWER_PREFIX, tuple(NAMES[i:]), tuple(NAMES[i:])
        )
        for i in range(2)
    ]
    settings = InferenceSettings(mode="generate", max_new_tokens=20, batch_size=2)
    answers, plans = generation.generate_answers(model, tokenizer, device, prompts, settings, lambda n: None)
    assert model.generation_config is own  # lent, then given back
    for answer, plan in zip(answers, plans):
        expected = greedy_loop(model, plan.input_ids, 20, tokenizer.eos_token_id)
        assert answer == tokenizer.decode(plan.input_ids[plan.answer_start :] + expected, skip_special_tokens=True)
        # The test can fail: decoding with the checkpoint's penalty gives another answer.
        penalized = GenerationConfig(
            max_new_tokens=20,
            do_sample=False,
            repetition_penalty=1.3,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        assert (
            model.generate(input_ids=torch.tensor([plan.input_ids]), generation_config=penalized)[
                0, len(plan.input_ids) :
            ].tolist()
            != expected
        )


@pytest.fixture()
def short_context(tiny_llama_dir: Path):
    """The tiny Llama with a context of ``limit`` positions (RoPE computes any position, so
    only the rule under test keeps prompt + answer within it)."""
    model, tokenizer, device = load_model(tiny_llama_dir, dtype="float32", device="cpu")

    def limited(limit: int):
        model.config.max_position_embeddings = limit
        return model

    return limited, tokenizer, device


def test_score_mode_scores_only_candidates_that_fit(short_context) -> None:
    limited, tokenizer, device = short_context
    prompt = render(tokenizer, ["Heat (1995)"], NAMES)
    context, continuations = candidate_token_ids(tokenizer, prompt + ANSWER_PREFIX, NAMES)
    full = score_candidates(limited(len(context) + 100), tokenizer, prompt + ANSWER_PREFIX, NAMES, 4, device)
    room = sorted(map(len, continuations))[len(NAMES) // 2]
    cut = score_candidates(limited(len(context) + room), tokenizer, prompt + ANSWER_PREFIX, NAMES, 4, device)
    fits = np.array([len(ids) <= room for ids in continuations])
    assert 0 < fits.sum() < len(NAMES)
    np.testing.assert_allclose(cut[fits], full[fits], atol=1e-5)
    assert np.isnan(cut[~fits]).all() and not np.isnan(full).any()
    assert np.isnan(score_candidates(limited(len(context)), tokenizer, prompt + ANSWER_PREFIX, NAMES, 4, device)).all()


def test_generate_mode_budget_fits_the_context(short_context, monkeypatch: pytest.MonkeyPatch) -> None:
    limited, tokenizer, device = short_context
    prompts = [
        UserPrompt(
            f"u{i}", render(tokenizer, ["Heat (1995)"] * (5 * i + 1), NAMES), ANSWER_PREFIX, tuple(NAMES), tuple(NAMES)
        )
        for i in range(4)
    ]
    settings = InferenceSettings(mode="generate", batch_size=4)
    lengths = [len(generation.plan_generation(tokenizer, p, settings, None).input_ids) for p in prompts]
    wanted = generation.generation_budget(tokenizer, NAMES, settings)
    limit = lengths[1] + 7  # room for u0: 7 + its shorter prompt; u1: 7; u2, u3: none
    assert lengths[2] > limit
    model = limited(limit)
    calls = []
    real_generate = model.generate

    def recorded(**kwargs):
        rows = kwargs["attention_mask"].sum(dim=1).tolist()
        calls.append((rows, kwargs["generation_config"].max_new_tokens))
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", recorded)
    answers, plans = generation.generate_answers(model, tokenizer, device, prompts, settings, lambda n: None)
    assert [plan.budget for plan in plans] == [limit - lengths[0], 7, 0, 0]
    assert [plan.budget_cut for plan in plans] == [wanted - (limit - lengths[0]), wanted - 7, wanted, wanted]
    assert [plan.context_cut for plan in plans] == [0, 0, len(NAMES), len(NAMES)]
    assert calls and all(
        length + budget <= limit for rows, budget in calls for length in rows
    )  # no row decodes past the context
    assert answers[2] == answers[3] == ANSWER_PREFIX.rstrip()  # nothing generated


def test_run_inference_counts_context_cuts_and_never_fails(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    model_dir = tmp_path / "short_model"
    shutil.copytree(tiny_llama_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    _, tokenizer, _ = load_model(tiny_llama_dir, dtype="float32", device="cpu")
    rows = write_test_set(tmp_path / "test.jsonl", tokenizer, n_users=3)
    prompt_tokens = [
        len(candidate_token_ids(tokenizer, r["prompt"] + ANSWER_PREFIX, [c["name"] for c in r["candidates"]])[0])
        for r in rows
    ]
    config["max_position_embeddings"] = (
        min(prompt_tokens) + 6
    )  # the shortest candidates fit for some users; no list fits
    (model_dir / "config.json").write_text(json.dumps(config))
    for mode in ("score", "generate"):
        settings = InferenceSettings(mode=mode, chunk_size=2, dtype="float32", device="cpu")
        predictions, run = run_inference(tmp_path / "test.jsonl", model_dir, settings, tmp_path / f"chunks-{mode}")
        per_user = predictions.groupby("user").first()
        for row in rows:
            mine = predictions[predictions["user"] == row["user"]]
            assert sorted(mine["item"]) == sorted(c["item"] for c in row["candidates"])  # complete lists all the same
            assert list(run[row["user"]]) == mine["item"].tolist()
        if mode == "score":
            appended = predictions.groupby("user")["source"].apply(lambda s: int((s == "appended").sum()))
            assert (per_user["n_context_cut"] == appended).all() and appended.sum() > 0
            assert predictions.loc[predictions["source"] == "appended", "score"].isna().all()
        else:
            assert (per_user["n_budget_cut"] > 0).all()


# --- generate_max_users: a smoke test of the generate path on a few users -------------------


def test_generate_max_users_ranks_the_first_users_in_generate_mode_only(tiny_llama_dir: Path, tiny, tmp_path: Path):
    _, tokenizer, _ = tiny
    rows = write_test_set(tmp_path / "test.jsonl", tokenizer, n_users=3)
    ranked = {}
    for mode in ("score", "generate"):
        settings = InferenceSettings(
            mode=mode, generate_max_users=2, max_new_tokens=4, chunk_size=2, dtype="float32", device="cpu"
        )
        predictions, run = run_inference(tmp_path / "test.jsonl", tiny_llama_dir, settings, tmp_path / mode)
        ranked[mode] = list(dict.fromkeys(predictions["user"]))
        assert list(run) == ranked[mode]
    assert ranked == {"score": [r["user"] for r in rows], "generate": [r["user"] for r in rows[:2]]}
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="inference.generate_max_users: expected a positive integer or null"):
            InferenceSettings(generate_max_users=bad)


def test_a_capped_generate_ranking_cannot_join_the_comparison(tmp_path: Path) -> None:
    from snakemake_helpers import load_config, planned_jobs, write_override

    inference = load_config()["inference"]
    inference["cpu_small"]["generate_max_users"] = 4
    override = write_override(tmp_path, {"inference": inference})
    with pytest.raises(Exception) as error:
        planned_jobs(tmp_path, overrides=[override])  # run.zero_shot: [score, generate]
    message = "compare ml1m_mini: zero_shot_generate ranks in generate mode only the first 4 test users"
    assert message in str(error.value) or message in repr(error.value.__cause__)
    # its metrics alone are fine, and so is a comparison without it
    alone = planned_jobs(tmp_path, targets=["results/ml1m_mini/metrics/zero_shot_generate.json"], overrides=[override])
    assert ("infer", {"dataset": "ml1m_mini", "system": "zero_shot_generate"}) in alone
    without = write_override(tmp_path, {"inference": inference, "run": {"zero_shot": ["score"]}}, name="score.yaml")
    assert any(rule == "compare" for rule, _ in planned_jobs(tmp_path, overrides=[without]))
