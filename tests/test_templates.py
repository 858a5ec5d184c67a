"""Every template's rendering, pinned byte for byte as written out from the study's formats."""

from __future__ import annotations

import pytest

from sbt import templates
from sbt.templates import ConversationError, EmptyMessageError, render

CONVERSATION = [
    {"from": "human", "value": "What is in the picture?"},
    {"from": "gpt", "value": "A cat on a mat."},
    {"from": "human", "value": "What color is it?"},
    {"from": "gpt", "value": "It is orange."},
]

V1_TEXT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions. USER: What is in the "
    "picture? ASSISTANT: A cat on a mat.</s>USER: What color is it? ASSISTANT: It is orange.</s>"
)
LLAVA_V1_TEXT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions. USER: What is in the "
    "picture? ASSISTANT: A cat on a mat.</s>USER: What color is it? ASSISTANT: It is orange.</s>"
)
LLAMA_2_TEXT = (
    "[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as "
    "helpfully as possible, while being safe.  Your answers should not include any harmful, "
    "unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your "
    "responses are socially unbiased and positive in nature.\n\nIf a question does not make any "
    "sense, or is not factually coherent, explain why instead of answering something not "
    "correct. If you don't know the answer to a question, please don't share false "
    "information.\n<</SYS>>\n\nWhat is in the picture? [/INST] A cat on a mat. </s><s>[INST] "
    "What color is it? [/INST] It is orange. </s>"
)
LLAVA_LLAMA_2_TEXT = (
    "[INST] <<SYS>>\nYou are a helpful language and vision assistant. You are able to "
    "understand the visual content that the user provides, and assist the user with a variety "
    "of tasks using natural language.\n<</SYS>>\n\nWhat is in the picture? [/INST] A cat on a "
    "mat. </s><s>[INST] What color is it? [/INST] It is orange. </s>"
)
V0_TEXT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions.\n\n"
    "### Human: What is in the picture?\n### Assistant: A cat on a mat.\n"
    "### Human: What color is it?\n### Assistant: It is orange.\n### "
)
PLAIN_TEXT = "What is in the picture?\nA cat on a mat.\nWhat color is it?\nIt is orange.\n"

# Trained: from just after the role tag (the opening space included) through the separator
# that closes the turn, as the study's token arithmetic trains (tests/test_golden_train.py).
EXPECTED = {
    "v1": (V1_TEXT, [" A cat on a mat.</s>", " It is orange.</s>"]),
    "vicuna_v1": (V1_TEXT, [" A cat on a mat.</s>", " It is orange.</s>"]),
    "llava_v1": (LLAVA_V1_TEXT, [" A cat on a mat.</s>", " It is orange.</s>"]),
    "llama_2": (LLAMA_2_TEXT, [" A cat on a mat. </s>", " It is orange. </s>"]),
    "llava_llama_2": (LLAVA_LLAMA_2_TEXT, [" A cat on a mat. </s>", " It is orange. </s>"]),
    "v0": (V0_TEXT, [" A cat on a mat.\n", " It is orange.\n"]),
    "plain": (PLAIN_TEXT, ["A cat on a mat.\n", "It is orange.\n"]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_render_is_byte_exact(name):
    text, trained = EXPECTED[name]
    rendered = render(name, CONVERSATION)
    assert rendered.text == text
    assert rendered.trained_text() == trained
    # The spans sit where the trained strings occur, in order (the answers are unique).
    first = text.index(trained[0])
    second = text.index(trained[1], first + len(trained[0]))
    assert rendered.trained_spans == (
        (first, first + len(trained[0])),
        (second, second + len(trained[1])),
    )


def test_every_template_is_pinned():
    assert set(templates.TEMPLATE_NAMES) == set(EXPECTED) | {"chat_template"}


def test_llama_2_system_text_has_two_spaces():
    assert "while being safe.  Your answers" in templates.SYS_LLAMA_2


def test_leading_gpt_turn_is_dropped():
    conversation = [{"from": "gpt", "value": "Dropped."}, *CONVERSATION[:2]]
    rendered = render("v1", conversation)
    assert rendered.text == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: What is in "
        "the picture? ASSISTANT: A cat on a mat.</s>"
    )
    assert "Dropped" not in rendered.text


def test_trailing_user_turn_is_rendered_but_not_trained():
    rendered = render("llama_2", CONVERSATION[:3])
    assert rendered.text.endswith("A cat on a mat. </s><s>[INST] What color is it? [/INST]")
    assert rendered.trained_text() == [" A cat on a mat. </s>"]


def test_whitespace_is_kept_verbatim():
    conversation = [
        {"from": "human", "value": "\nWhat is this?"},
        {"from": "gpt", "value": "A bus.\n"},
    ]
    rendered = render("v1", conversation)
    assert rendered.text.endswith(" USER: \nWhat is this? ASSISTANT: A bus.\n</s>")
    assert rendered.trained_text() == [" A bus.\n</s>"]


def test_unknown_template_lists_valid_names():
    with pytest.raises(ValueError) as caught:
        render("vicuna", CONVERSATION)
    message = str(caught.value)
    assert "'vicuna'" in message
    for name in ("v1", "llava_v1", "llama_2", "llava_llama_2", "v0", "plain", "chat_template"):
        assert name in message


@pytest.mark.parametrize(
    ("conversation", "field", "error"),
    [
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], "conversations[1].from", ConversationError),
        ([{"from": "system", "value": "a"}], "conversations[0].from", ConversationError),
        ([{"from": "human", "value": 3}], "conversations[0].value", ConversationError),
        ([{"from": "human", "value": "a"}, {"from": "gpt", "value": ""}], "conversations[1].value", EmptyMessageError),
        ([{"from": "human", "value": " \n"}, {"from": "gpt", "value": "b"}], "conversations[0].value", EmptyMessageError),
        ("not a list", "conversations", ConversationError),
    ],
)  # fmt: skip
def test_bad_conversations_name_the_field(conversation, field, error):
    with pytest.raises(error) as caught:
        render("v1", conversation)
    assert caught.value.field == field


def test_chat_template_uses_the_tokenizers_template(tiny_backbone_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_factory("chat_template"))
    rendered = render("chat_template", CONVERSATION, tokenizer)
    assert rendered.text == (
        "<|im_start|>user\nWhat is in the picture?<|im_end|>\n"
        "<|im_start|>assistant\nA cat on a mat.<|im_end|>\n"
        "<|im_start|>user\nWhat color is it?<|im_end|>\n"
        "<|im_start|>assistant\nIt is orange.<|im_end|>\n"
    )
    assert rendered.trained_text() == ["A cat on a mat.<|im_end|>\n", "It is orange.<|im_end|>\n"]


def test_chat_template_must_render_prefixes(tiny_backbone_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_factory("chat_template"))
    tokenizer.chat_template = (
        "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ValueError, match="prefixes"):
        render("chat_template", CONVERSATION, tokenizer)


def test_chat_template_needs_a_tokenizer_with_one(tiny_backbone):
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="chat template"):
        render("chat_template", CONVERSATION, AutoTokenizer.from_pretrained(tiny_backbone))
