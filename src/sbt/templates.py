"""The study's conversation templates, rendered byte-exactly, with the character spans to train.

A conversation is LLaVA's list of turns `[{"from": "human"|"gpt", "value": str}, ...]`.
If its first turn is from `gpt`, that turn is dropped (as the study's preprocessing did);
the remaining turns must alternate human, gpt, human, ...

`render(template, conversation)` (or `Template.render`) returns the prompt text and the
spans `[start, end)` of the characters that carry loss. The rule for the spans: **each assistant turn from just after
its role tag (so the single space that opens the answer is in) through the separator that
closes it**, and nothing else (no system text, no user text, no role tags). Per template:

| template | assistant turn rendered as | trained span |
|---|---|---|
| `v1`, `vicuna_v1`, `llava_v1` | `"ASSISTANT:" + " " + m + "</s>"` | `" " + m + "</s>"` |
| `llama_2`, `llava_llama_2` | `"[/INST]" + " " + m + " </s>"` | `" " + m + " </s>"` |
| `v0` | `"### Assistant:" + " " + m + "\\n"` | `" " + m + "\\n"` |
| `plain` | `m + "\\n"` | `m + "\\n"` |
| `chat_template` | whatever the tokenizer's template adds | see below |

This is what the study's token-count arithmetic trains (llava/train/train.py,
`preprocess_v1` / `preprocess_llama_2`: it masks the instruction up to the role tag's colon
or `[/INST]`, and trains the rest of the round), checked token for token against golden data
from that code (tests/test_golden_train.py). With a SentencePiece tokenizer the opening
space is usually part of the answer's first token (`"▁Answer"`); where the answer starts
with a digit, punctuation or a newline it is a token of its own, a lone `"▁"`, and the study
trains it, so this workflow does too. For `v0` the study's own code also trained the role
tag `"### Assistant:"`; this workflow does not, following the rule above.

`chat_template` renders with the tokenizer's own Jinja chat template (for backbones the
study did not use). Messages become `{"role": "user"|"assistant", "content": m}`; no
system message is added. The span of assistant message i runs from the end of the
rendering of the turns before it with the generation prompt added, to the end of the
rendering of the turns up to and including it; so it holds the message and whatever the
template closes it with. The template must render each shorter conversation as a prefix of
the longer ones, otherwise rendering fails with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

SYS_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SYS_V0 = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# Two spaces after "being safe." as in Meta's published system prompt.
SYS_LLAMA_2 = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
    "possible, while being safe.  Your answers should not include any harmful, unethical, "
    "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
    "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
    "or is not factually coherent, explain why instead of answering something not correct. "
    "If you don't know the answer to a question, please don't share false information."
)
SYS_LLAVA_LLAMA_2 = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using "
    "natural language."
)

USER_ROLE = "human"
ASSISTANT_ROLE = "gpt"


class ConversationError(ValueError):
    """A conversation that no template can render; `field` names the offending part."""

    def __init__(self, message: str, field: str = "conversations") -> None:
        super().__init__(message)
        self.field = field


class EmptyMessageError(ConversationError):
    """A turn whose text is empty or only whitespace: rendering it would corrupt the format."""


@dataclass(frozen=True)
class Rendered:
    """A rendered prompt and the `[start, end)` character spans that carry loss."""

    text: str
    trained_spans: tuple[tuple[int, int], ...]

    def trained_text(self) -> list[str]:
        return [self.text[start:end] for start, end in self.trained_spans]


# A template turns the alternating messages into (text, trained?) segments.
Segments = list[tuple[str, bool]]


def _two_separator(system: str) -> Callable[[list[str]], Segments]:
    """Vicuna v1 style: `SYS USER: m0 ASSISTANT: m1</s>USER: m2 ...`."""

    def segments(messages: list[str]) -> Segments:
        out: Segments = [(system + " ", False)]
        for i, message in enumerate(messages):
            if i % 2 == 0:
                out.append(("USER: " + message + " ", False))
            else:
                out += [("ASSISTANT:", False), (" " + message + "</s>", True)]
        return out

    return segments


def _llama_2(system: str) -> Callable[[list[str]], Segments]:
    """LLaMA-2 chat style; the first round's leading `<s>` is left to the tokenizer's BOS."""

    def segments(messages: list[str]) -> Segments:
        out: Segments = []
        for i, message in enumerate(messages):
            if i == 0:
                out.append(
                    ("[INST] <<SYS>>\n" + system + "\n<</SYS>>\n\n" + message + " [/INST]", False)
                )
            elif i % 2 == 0:
                out.append(("<s>[INST] " + message + " [/INST]", False))
            else:
                out.append((" " + message + " </s>", True))
        return out

    return segments


def _v0(messages: list[str]) -> Segments:
    out: Segments = [(SYS_V0 + "\n\n", False)]
    for i, message in enumerate(messages):
        if i % 2 == 0:
            out.append(("### Human: " + message + "\n", False))
        else:
            out += [("### Assistant:", False), (" " + message + "\n", True)]
    out.append(("### ", False))
    return out


def _plain(messages: list[str]) -> Segments:
    return [(message + "\n", i % 2 == 1) for i, message in enumerate(messages)]


PAD_TOKEN_V0 = "[PAD]"


@dataclass(frozen=True)
class Template:
    """How to render one template, and what its text needs from the tokenizer."""

    name: str
    segments: Callable[[list[str]], Segments] | None
    # Literal strings in the rendered text that must tokenize to one special token each
    # (the EOS / BOS of a LLaMA tokenizer).
    special_literals: tuple[str, ...] = ()
    # Whether the tokenizer adds its BOS in front; chat templates write their own.
    add_special_tokens: bool = True
    # The study's pad-token rule: None pads with the unk token (a tokenizer without one
    # keeps its pad token, or pads with EOS); a token here is added as the pad token
    # instead when the tokenizer has none (v0's "[PAD]", then the embeddings are resized).
    pad_token: str | None = None

    def render(self, conversation: object, tokenizer: object = None) -> Rendered:
        """Render a LLaVA conversation; `tokenizer` only for `chat_template`."""
        messages = messages_of(conversation)
        if self.segments is None:
            return _render_chat_template(messages, tokenizer)
        text_parts: list[str] = []
        spans: list[tuple[int, int]] = []
        position = 0
        for piece, trained in self.segments(messages):
            if trained:
                spans.append((position, position + len(piece)))
            text_parts.append(piece)
            position += len(piece)
        return Rendered("".join(text_parts), tuple(spans))


TEMPLATES: dict[str, Template] = {
    "v1": Template("v1", _two_separator(SYS_V1), ("</s>",)),
    "vicuna_v1": Template("vicuna_v1", _two_separator(SYS_V1), ("</s>",)),
    "llava_v1": Template("llava_v1", _two_separator(SYS_V0), ("</s>",)),
    "llama_2": Template("llama_2", _llama_2(SYS_LLAMA_2), ("</s>", "<s>")),
    "llava_llama_2": Template("llava_llama_2", _llama_2(SYS_LLAVA_LLAMA_2), ("</s>", "<s>")),
    "v0": Template("v0", _v0, pad_token=PAD_TOKEN_V0),
    "plain": Template("plain", _plain),
    "chat_template": Template("chat_template", None, add_special_tokens=False),
}
TEMPLATE_NAMES = tuple(TEMPLATES)


def get_template(name: str) -> Template:
    """The registered template of this name (ValueError listing the valid names)."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(
            f"unknown template {name!r}; valid names: {', '.join(TEMPLATE_NAMES)}"
        ) from None


def as_template(template: Template | str) -> Template:
    """A Template as it is; a name looked up (for callers that only hold the name).

    Training resolves its template once and passes the object down, so the hot path never
    looks a name up again.
    """
    return template if isinstance(template, Template) else get_template(template)


def messages_of(conversation: object) -> list[str]:
    """Validate LLaVA turns and return the alternating message texts (user first).

    Drops a leading `gpt` turn. Raises ConversationError (EmptyMessageError for blank text).
    """
    if not isinstance(conversation, list):
        raise ConversationError("must be a list of turns")
    turns = list(enumerate(conversation))
    for i, turn in turns:
        if not isinstance(turn, dict):
            raise ConversationError("turn must be an object", f"conversations[{i}]")
        if turn.get("from") not in (USER_ROLE, ASSISTANT_ROLE):
            raise ConversationError(
                f"role must be {USER_ROLE!r} or {ASSISTANT_ROLE!r}, got {turn.get('from')!r}",
                f"conversations[{i}].from",
            )
        if not isinstance(turn.get("value"), str):
            raise ConversationError("must be a string", f"conversations[{i}].value")
    if turns and turns[0][1]["from"] == ASSISTANT_ROLE:
        turns = turns[1:]
    messages = []
    for position, (i, turn) in enumerate(turns):
        expected = USER_ROLE if position % 2 == 0 else ASSISTANT_ROLE
        if turn["from"] != expected:
            raise ConversationError(
                f"roles must alternate {USER_ROLE}/{ASSISTANT_ROLE}; expected {expected!r}",
                f"conversations[{i}].from",
            )
        if not turn["value"].strip():
            raise EmptyMessageError("empty message", f"conversations[{i}].value")
        messages.append(turn["value"])
    return messages


def render(template: Template | str, conversation: object, tokenizer: object = None) -> Rendered:
    """Render a LLaVA conversation with `template` (or the template of that name)."""
    return as_template(template).render(conversation, tokenizer)


def _render_chat_template(messages: Sequence[str], tokenizer: object) -> Rendered:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat_template' needs a tokenizer that has a chat template")
    chat = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": message}
        for i, message in enumerate(messages)
    ]

    def apply(turns: list[dict], generation_prompt: bool = False) -> str:
        if not turns:
            return ""
        return tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=generation_prompt
        )

    text = apply(chat)
    spans = []
    for i in range(1, len(chat), 2):
        prefix = apply(chat[:i], generation_prompt=True)
        through = apply(chat[: i + 1])
        if not (through.startswith(prefix) and text.startswith(through)):
            raise ValueError(
                "the tokenizer's chat template does not render shorter conversations as "
                "prefixes of longer ones, so assistant spans cannot be located"
            )
        spans.append((len(prefix), len(through)))
    return Rendered(text, tuple(spans))
