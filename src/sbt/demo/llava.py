#!/usr/bin/env python
"""Write the small, seeded LLaVA-format demo collection the embedded demo trains on.

The records follow the real LLaVA instruction schema and its quirks, so the conversion,
templates and training meet what real files hold: COCO-style string ids and some integer
ids, ``"image": "000000xxxxxx.jpg"``, 1-4 rounds (mean about 2.7), ``"<image>\\n"`` at the
start of the first human turn in most records and ``"\\n<image>"`` at its end in some,
about 10% text-only records without image or tag, a few records whose first turn is from
gpt, and a few ids repeated (another conversation about the same image, as in
llava_instruct_150k). Text is templated everyday-scene English so a tokenizer trained on
it looks sensible. Same seed, same bytes.

The other synthetic records the project uses are built here too, from the same pieces
(`conversation`, `llava_record`, the words in `sbt.demo.llava_phrases`): `tiny_records`,
the test suite's tiny corpus; `filler_records`, answers long enough to fill any sequence
length (sbt.gpu_check); `length_mix_records`, the demo's rounds cut to LLaVA-like lengths
(`sample_lengths`; scripts/bench_train.py).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from sbt.common import atomic_path, cli
from sbt.demo import DEMO_DIR
from sbt.demo import llava_phrases as phrases

DEFAULT_SEED = 2309
DEFAULT_RECORDS = 300
DEFAULT_OUTPUT = DEMO_DIR / "llava_instruct_demo.json"

SHARE_TEXT_ONLY = 0.10
SHARE_GPT_FIRST = 0.025
SHARE_TAG_AT_END = 0.25
SHARE_INT_ID = 0.08
SHARE_REPEATED_IMAGE = 0.02
# Rounds per record are dealt from shuffled decks of this mix: mean 2.7, like
# llava_instruct_80k, for any number of records (not only on average over many).
ROUND_DECK = (1, 1, 2, 2, 3, 3, 3, 4, 4, 4)
# LLaVA-like conversation lengths in tokens (system text included): log-normal, median
# about 300, about 5% above 1,000, capped at the study's maximum length.
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MIN, LENGTH_MAX = 300, 0.75, 40, 2048

Pairs = list[tuple[str, str]]  # (question, answer) rounds of one conversation


def conversation(pairs: Pairs) -> list[dict]:
    """LLaVA turns of (question, answer) rounds: human asks, gpt answers."""
    turns = []
    for question, answer in pairs:
        turns.append({"from": "human", "value": question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def llava_record(record_id: object, pairs: Pairs, image: str | None = None) -> dict:
    """One LLaVA-format record (keys in the published files' order: id, image, turns)."""
    record: dict = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["conversations"] = conversation(pairs)
    return record


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


class RecordMaker:
    """Seeded source of LLaVA-format records; ``make()`` returns the next one."""

    def __init__(self, seed: int = DEFAULT_SEED):
        self.rng = random.Random(seed)
        self.used_ids: set[object] = set()
        self.images: list[tuple[object, str]] = []
        self.round_deck: list[int] = []

    # -- scene and sentences ----------------------------------------------------------
    def _scene(self) -> dict:
        rng = self.rng
        action, places, objects, outdoors, kind = rng.choice(phrases.SCENES)
        phrase, noun, plural = rng.choice(phrases.PEOPLE if kind == "people" else phrases.ANIMALS)
        chosen = rng.sample(objects, k=min(len(objects), rng.randint(2, 3)))
        time_phrase, time_name = rng.choice(phrases.TIMES)
        return {
            "subject": phrase,
            "noun": noun,
            "be": "are" if plural else "is",
            "action": action,
            "place": rng.choice(places),
            "objects": [(rng.choice(phrases.COLORS), name) for name in chosen],
            "time": time_phrase,
            "time_name": time_name,
            "weather": rng.choice(phrases.WEATHER) if outdoors else None,
            "people": rng.randint(0 if kind == "animals" else 1, 6),
            "mood": rng.choice(phrases.MOODS),
        }

    def _objects_phrase(self, scene: dict) -> str:
        items = [_article(f"{color} {name}") for color, name in scene["objects"]]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    def _detail_answer(self, scene: dict) -> str:
        rng = self.rng
        s = scene
        sentences = [
            f"The image shows {s['subject']} {s['action']} {s['place']} {s['time']}.",
            f"Around the {s['noun']}, there {'is' if len(s['objects']) == 1 else 'are'} "
            f"{self._objects_phrase(s)}.",
        ]
        if s["weather"]:
            sentences.append(f"The weather looks {s['weather']}, and the light is soft.")
        if s["people"] > 1:
            sentences.append(
                f"In total, {phrases.NUMBER_WORDS[s['people']]} people can be seen in the scene, "
                "some of them in the background."
            )
        sentences.append(f"The overall atmosphere of the scene is {s['mood']} and natural.")
        sentences.append(
            f"It looks like an ordinary moment of everyday life, captured {s['place']}."
        )
        keep = rng.randint(2, len(sentences))
        return " ".join(sentences[:keep])

    def _reasoning(self, scene: dict) -> tuple[str, str]:
        rng = self.rng
        s = scene
        if rng.random() < 0.5:
            question = f"Why might the {s['noun']} be {s['action']} {s['place']}?"
            reasons = rng.sample(phrases.REASONS, k=rng.randint(1, 3))
            answer = (
                f"The {s['noun']} might be {s['action']} {s['place']} because "
                + "; also, ".join(reasons)
                + f". Details such as {self._objects_phrase(s)} nearby suggest a "
                f"{s['mood']} moment."
            )
        else:
            question = f"What should the {s['noun']} keep in mind while {s['action']}?"
            tips = rng.sample(phrases.SAFETY, k=rng.randint(1, 3))
            answer = (
                f"While {s['action']} {s['place']}, it is a good idea to keep a few things in "
                "mind, such as " + ", as well as ".join(tips) + ". This helps the activity "
                "stay safe and enjoyable."
            )
        return question, answer

    def _short_qa(self, scene: dict) -> tuple[str, str]:
        rng = self.rng
        s = scene
        color, name = rng.choice(s["objects"])
        options = [
            (
                f"What is the {s['noun']} doing in the image?",
                f"The {s['noun']} {s['be']} {s['action']}.",
            ),
            (f"Where is the {s['noun']}?", _cap(f"{s['place']}.")),
            (f"What color is the {name}?", f"The {name} is {color}."),
            (f"What color is the {name}?", _cap(f"{color}.")),
            (
                "How many people are visible in the image?",
                _cap(
                    f"{phrases.NUMBER_WORDS[s['people']]} "
                    f"{'person is' if s['people'] == 1 else 'people are'} visible in the image."
                ),
            ),
            (
                "What time of day does it appear to be?",
                f"It appears to be {s['time_name']}, judging by the light in the scene.",
            ),
            (
                f"What objects can be seen near the {s['noun']}?",
                f"Near the {s['noun']}, you can see {self._objects_phrase(s)}.",
            ),
            (
                f"Is there {_article(name)} in the picture?",
                f"Yes, there is {_article(color + ' ' + name)} close to the {s['noun']}.",
            ),
            (
                "What is the mood of the scene?",
                f"The scene feels {s['mood']}, with the {s['noun']} {s['action']} {s['place']}.",
            ),
        ]
        if s["weather"]:
            options.append(
                ("What is the weather like?", f"The weather appears to be {s['weather']}.")
            )
        return rng.choice(options)

    def _image_turns(self, rounds: int) -> Pairs:
        rng = self.rng
        scene = self._scene()
        pairs = []
        first_kind = rng.choices(["short", "detail", "reason"], weights=[0.6, 0.2, 0.2])[0]
        asked: set[str] = set()
        for number in range(rounds):
            for _ in range(20):  # a new question each round, as in real conversations
                kind = (
                    first_kind if number == 0 else rng.choices(["short", "reason"], [0.8, 0.2])[0]
                )
                if kind == "detail":
                    pair = (rng.choice(phrases.DETAIL_PROMPTS), self._detail_answer(scene))
                elif kind == "reason":
                    pair = self._reasoning(scene)
                else:
                    pair = self._short_qa(scene)
                if pair[0] not in asked:
                    break
            asked.add(pair[0])
            pairs.append(pair)
        return pairs

    def _text_turns(self, rounds: int) -> Pairs:
        rng = self.rng
        topic, tips = rng.choice(phrases.TOPICS)
        listed = "; ".join(f"{phrases.ORDINALS[i]}, {tip}" for i, (tip, _) in enumerate(tips))
        pairs = [
            (
                f"Can you give me a few tips for {topic}?",
                f"Sure! Here are a few tips for {topic}: {listed}. Small habits like these "
                "make a real difference over time.",
            )
        ]
        for which in rng.sample(range(len(tips)), k=rounds - 1):
            tip, why = tips[which]
            question = rng.choice(phrases.FOLLOW_UPS).format(ordinal=phrases.ORDINALS[which])
            answer = f"Of course. It helps to {tip} because {why}."
            if rng.random() < 0.5:
                answer += " Try it for a week and see how it works for you."
            pairs.append((question, answer))
        return pairs

    # -- ids and records --------------------------------------------------------------
    def _new_image(self) -> tuple[object, str]:
        while True:
            number = self.rng.randrange(9, 581_930)
            stem = f"{number:012d}"
            record_id: object = number if self.rng.random() < SHARE_INT_ID else stem
            if record_id not in self.used_ids:
                self.used_ids.add(record_id)
                self.images.append((record_id, f"{stem}.jpg"))
                return self.images[-1]

    def _text_id(self) -> str:
        alphabet = string.ascii_letters + string.digits
        while True:
            record_id = "".join(self.rng.choices(alphabet, k=7)) + f"_{self.rng.randrange(4)}"
            if record_id not in self.used_ids:
                self.used_ids.add(record_id)
                return record_id

    def make(self) -> dict:
        rng = self.rng
        if not self.round_deck:
            self.round_deck = list(ROUND_DECK)
            rng.shuffle(self.round_deck)
        rounds = self.round_deck.pop()
        draw = rng.random()
        if draw < SHARE_TEXT_ONLY:  # text-only; the first SHARE_GPT_FIRST open with gpt
            pairs = self._text_turns(rounds)  # drawn before the id, as ever (same bytes)
            record = llava_record(self._text_id(), pairs)
            if draw < SHARE_GPT_FIRST:
                record["conversations"].insert(0, {"from": "gpt", "value": phrases.GREETING})
            return record
        if self.images and rng.random() < SHARE_REPEATED_IMAGE:
            record_id, image = rng.choice(self.images)
        else:
            record_id, image = self._new_image()
        (question, answer), *rest = self._image_turns(rounds)
        at_end = rng.random() < SHARE_TAG_AT_END
        question = f"{question}\n<image>" if at_end else f"<image>\n{question}"
        return llava_record(record_id, [(question, answer), *rest], image)


def generate_records(count: int, seed: int = DEFAULT_SEED) -> Iterator[dict]:
    """Yield ``count`` demo records; the same seed gives the same records."""
    maker = RecordMaker(seed)
    for _ in range(count):
        yield maker.make()


def write_demo(path: str | Path, count: int = DEFAULT_RECORDS, seed: int = DEFAULT_SEED) -> None:
    """Write the records pretty-printed like the published files (indent 1 keeps it small)."""
    records = list(generate_records(count, seed))
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        json.dump(records, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


# -- the other record mixes, of the same pieces ---------------------------------------
def tiny_records(count: int = 300, seed: int = 0) -> list[dict]:
    """The test suite's tiny corpus: one- and two-round records, `<image>` already removed.

    The tiny test tokenizer and the tests' golden numbers are built on exactly these
    records, so their draws stay as they are.
    """
    rng = random.Random(seed)
    records = []
    for i in range(count):
        subject, place = rng.choice(phrases.TINY_SUBJECTS), rng.choice(phrases.TINY_PLACES)
        color = rng.choice(phrases.TINY_COLORS)
        question = (
            f"\nWhat is the {color} {subject} doing?"
            if i % 2
            else f"Describe the {subject} in the picture.\n"
        )
        pairs = [(question, f"The {color} {subject} is {place}. The scene is bright.")]
        if i % 3 == 0:
            other = rng.choice(phrases.TINY_SUBJECTS)
            answer = rng.choice(["Yes, there is one.", "No, I see none."])
            pairs.append((f"Is there a {other} too?", answer))
        records.append(llava_record(f"{i:06d}", pairs, image=f"{i:012d}.jpg"))
    return records


def filler_records(
    count: int, words_per_answer: int, seed: int = 0, id_prefix: str = "filler"
) -> list[dict]:
    """One-round text-only records whose answers are `words_per_answer` random words.

    Every word is at least one token, so each record fills a sequence of that many tokens:
    what a throughput measurement at a fixed sequence length needs (sbt.gpu_check).
    """
    rng = random.Random(seed)
    records = []
    for i in range(count):
        answer = " ".join(rng.choice(phrases.FILLER_WORDS) for _ in range(words_per_answer))
        records.append(
            llava_record(f"{id_prefix}-{i}", [(phrases.FILLER_QUESTION.format(i), answer)])
        )
    return records


def sample_lengths(count: int, rng: random.Random, maximum: int = LENGTH_MAX) -> list[int]:
    """LLaVA-like conversation lengths in tokens: log-normal, clipped to [40, maximum]."""
    lengths = []
    for _ in range(count):
        length = rng.lognormvariate(math.log(LENGTH_MEDIAN), LENGTH_SIGMA)
        lengths.append(round(min(max(length, LENGTH_MIN), maximum)))
    return lengths


def text_rounds(seed: int) -> Iterator[tuple[str, str]]:
    """The demo records' (question, answer) rounds, endlessly; no `<image>`, no greeting."""
    maker = RecordMaker(seed)
    while True:
        turns = maker.make()["conversations"]
        if turns[0]["from"] == "gpt":
            turns = turns[1:]
        for question, answer in zip(turns[::2], turns[1::2], strict=True):
            yield question["value"].replace("<image>", "").strip(), answer["value"]


def length_mix_records(
    lengths: list[int],
    n_tokens: Callable[[str], int],
    overhead: int,
    seed: int,
    per_round: int = 4,
    id_prefix: str = "mix",
) -> list[dict]:
    """Text-only records of the demo's rounds (`text_rounds`), one per target length.

    Rounds are added until a record reaches its length in tokens, the last answer cut to
    fit. `n_tokens` counts a text's tokens; `overhead`: those of the template's system
    text and role tags; `per_round`: those each further round adds (tags, separators).
    """
    source = text_rounds(seed)
    records = []
    for index, target in enumerate(lengths):
        pairs: Pairs = []
        used = overhead
        while used < target or not pairs:  # at least one round
            question, answer = next(source)
            room = target - used - per_round - n_tokens(question)
            answer_tokens = n_tokens(answer)
            if room < answer_tokens:  # cut the answer to fit the sampled length
                words = answer.split()
                answer = " ".join(words[: max(1, len(words) * max(room, 0) // answer_tokens)])
            pairs.append((question, answer))
            used += per_round + n_tokens(question) + n_tokens(answer)
        records.append(llava_record(f"{id_prefix}-{index:05d}", pairs))
    return records


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON file to write")
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="how many records")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    write_demo(args.output, args.records, args.seed)
    print(f"make_demo_llava: wrote {args.records} records to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
