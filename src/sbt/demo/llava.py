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
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections.abc import Iterator
from pathlib import Path

from sbt.common import atomic_path, cli
from sbt.demo import DEMO_DIR

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

# (phrase, noun, plural) for people and animals; scenes say which kind they fit.
PEOPLE = [
    ("a man", "man", False),
    ("a woman", "woman", False),
    ("a young boy", "boy", False),
    ("a little girl", "girl", False),
    ("an older man", "man", False),
    ("a young woman", "woman", False),
    ("two children", "children", True),
    ("a group of friends", "group", True),
    ("a couple", "couple", True),
]
ANIMALS = [
    ("a brown dog", "dog", False),
    ("a small white dog", "dog", False),
    ("a gray cat", "cat", False),
    ("a black cat", "cat", False),
    ("two puppies", "puppies", True),
]
# (action, places, nearby objects, outdoors, subject kind)
SCENES = [
    (
        "riding a bicycle",
        ["on a quiet street", "along a river path", "through a city park"],
        ["parked car", "street sign", "row of trees", "trash can", "fire hydrant"],
        True,
        "people",
    ),
    (
        "flying a kite",
        ["on a sandy beach", "in an open field", "at the park"],
        ["picnic blanket", "kite", "backpack", "water bottle"],
        True,
        "people",
    ),
    (
        "sitting on a wooden bench",
        ["in a city park", "near a fountain", "at a bus stop"],
        ["newspaper", "coffee cup", "bicycle", "lamp post", "pigeon"],
        True,
        "people",
    ),
    (
        "holding an umbrella",
        ["on a busy sidewalk", "outside a train station", "near a crosswalk"],
        ["umbrella", "taxi", "traffic light", "shop window"],
        True,
        "people",
    ),
    (
        "playing frisbee",
        ["in a grassy park", "on the beach", "in a backyard"],
        ["frisbee", "tree", "cooler", "fence"],
        True,
        "people",
    ),
    (
        "eating a slice of pizza",
        ["at a small restaurant", "at a kitchen table", "in a food court"],
        ["pizza box", "glass of water", "plate", "napkin", "menu"],
        False,
        "people",
    ),
    (
        "preparing a meal",
        ["in a bright kitchen", "in a small apartment kitchen"],
        ["cutting board", "frying pan", "bowl of vegetables", "refrigerator", "knife"],
        False,
        "people",
    ),
    (
        "skiing down a slope",
        ["on a snowy mountain", "at a ski resort"],
        ["ski poles", "pine tree", "ski lift", "snowboard"],
        True,
        "people",
    ),
    (
        "carrying a surfboard",
        ["on the beach", "near the ocean waves"],
        ["surfboard", "beach towel", "lifeguard tower", "sailboat"],
        True,
        "people",
    ),
    (
        "working on a laptop",
        ["at a coffee shop", "in a home office", "at a library table"],
        ["laptop", "coffee mug", "notebook", "desk lamp", "cell phone"],
        False,
        "people",
    ),
    (
        "waiting for a bus",
        ["at a bus stop", "on a city street"],
        ["bus", "bench", "street sign", "suitcase"],
        True,
        "people",
    ),
    (
        "cutting a birthday cake",
        ["at a dining table", "in a decorated living room"],
        ["cake", "candles", "balloons", "plates", "gift box"],
        False,
        "people",
    ),
    (
        "playing tennis",
        ["on a tennis court", "at a sports club"],
        ["tennis racket", "tennis ball", "net", "water bottle"],
        True,
        "people",
    ),
    (
        "sleeping on a couch",
        ["in a cozy living room", "next to a window"],
        ["pillow", "remote control", "blanket", "lamp"],
        False,
        "animals",
    ),
    (
        "chasing a ball",
        ["in a backyard", "on a grassy lawn", "at the park"],
        ["ball", "fence", "flower bed", "dog house"],
        True,
        "animals",
    ),
    (
        "looking out of a window",
        ["in a quiet bedroom", "in a sunny kitchen"],
        ["curtain", "potted plant", "window sill", "chair"],
        False,
        "animals",
    ),
    (
        "sitting next to a suitcase",
        ["in a hotel room", "in a hallway"],
        ["suitcase", "shoes", "bed", "jacket"],
        False,
        "animals",
    ),
]
COLORS = ["red", "blue", "green", "yellow", "white", "black", "orange", "brown", "gray", "purple"]
# (phrase in a sentence, name on its own)
TIMES = [
    ("in the morning", "morning"),
    ("in the afternoon", "afternoon"),
    ("in the early evening", "early evening"),
    ("at sunset", "sunset"),
    ("at night", "night time"),
]
WEATHER = ["sunny", "cloudy", "overcast", "clear", "slightly rainy"]
NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six"]

DETAIL_PROMPTS = [
    "Describe the following image.",
    "What do you see happening in this image?",
    "Can you elaborate on the elements of the picture provided?",
    "Write a detailed description of the given image.",
    "What's happening in the scene?",
    "Explain the visual content of the image in great detail.",
]
REASONS = [
    "it is a pleasant way to spend some free time",
    "the weather makes it a good moment to be outside",
    "it helps to relax after a long day",
    "it is part of a daily routine",
    "it is a simple way to stay active and healthy",
    "it gives a chance to spend time with friends or family",
]
SAFETY = [
    "paying attention to the people and vehicles around them",
    "wearing comfortable clothes and suitable shoes",
    "drinking enough water and taking short breaks",
    "keeping personal belongings within reach",
    "watching out for uneven ground and slippery spots",
]
MOODS = ["relaxed", "cheerful", "calm", "busy", "lively", "peaceful"]
# (topic, [(tip, why it helps), ...])
TOPICS = [
    ("keeping houseplants healthy", [
        ("water them only when the soil feels dry", "too much water makes the roots rot"),
        ("place them where they get enough indirect light",
         "most houseplants grow best in bright light that does not burn their leaves"),
        ("wipe dust off the leaves now and then", "clean leaves take in more light"),
    ]),
    ("planning a weekend trip", [
        ("decide on a budget before booking anything",
         "it keeps the choices simple and avoids surprises later"),
        ("pack light and bring a reusable water bottle",
         "a small bag is easier to carry on trains and short walks"),
        ("check the weather forecast the day before",
         "you can pack the right clothes and plan indoor activities for rainy hours"),
    ]),
    ("cooking a quick dinner", [
        ("keep a few simple ingredients like rice and eggs at home",
         "you can always make a meal without going shopping"),
        ("cut all vegetables before you start cooking",
         "nothing burns while you are still chopping"),
        ("use one pan to save time on washing up", "cleaning up takes only a few minutes"),
    ]),
    ("studying for an exam", [
        ("split the material into small daily portions",
         "the brain remembers more when learning is spread over several days"),
        ("test yourself instead of only rereading notes",
         "recalling an answer shows what you really know"),
        ("sleep well the night before", "a rested mind thinks faster and makes fewer mistakes"),
    ]),
    ("starting to run regularly", [
        ("begin with short distances and a slow pace",
         "the body needs a few weeks to get used to the effort"),
        ("run at the same time of day to build a habit",
         "a fixed time makes it easier to keep going"),
        ("buy shoes that fit your feet well", "good shoes protect your knees and ankles"),
    ]),
    ("keeping a small kitchen tidy", [
        ("clean up while the food is cooking", "there is less to do after the meal"),
        ("store rarely used tools in a high cupboard",
         "the counters stay free for the things you use every day"),
        ("wipe the counters every evening", "crumbs and stains never have time to build up"),
    ]),
]  # fmt: skip
FOLLOW_UPS = [
    "Thanks! Could you explain the {ordinal} point in more detail?",
    "That sounds useful. Why does the {ordinal} tip matter so much?",
    "Can you say more about the {ordinal} suggestion?",
]
ORDINALS = ["first", "second", "third"]
GREETING = "Hello! I am happy to help with everyday questions. What would you like to know?"


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
        action, places, objects, outdoors, kind = rng.choice(SCENES)
        phrase, noun, plural = rng.choice(PEOPLE if kind == "people" else ANIMALS)
        chosen = rng.sample(objects, k=min(len(objects), rng.randint(2, 3)))
        time_phrase, time_name = rng.choice(TIMES)
        return {
            "subject": phrase,
            "noun": noun,
            "be": "are" if plural else "is",
            "action": action,
            "place": rng.choice(places),
            "objects": [(rng.choice(COLORS), name) for name in chosen],
            "time": time_phrase,
            "time_name": time_name,
            "weather": rng.choice(WEATHER) if outdoors else None,
            "people": rng.randint(0 if kind == "animals" else 1, 6),
            "mood": rng.choice(MOODS),
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
                f"In total, {NUMBER_WORDS[s['people']]} people can be seen in the scene, "
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
            reasons = rng.sample(REASONS, k=rng.randint(1, 3))
            answer = (
                f"The {s['noun']} might be {s['action']} {s['place']} because "
                + "; also, ".join(reasons)
                + f". Details such as {self._objects_phrase(s)} nearby suggest a "
                f"{s['mood']} moment."
            )
        else:
            question = f"What should the {s['noun']} keep in mind while {s['action']}?"
            tips = rng.sample(SAFETY, k=rng.randint(1, 3))
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
                    f"{NUMBER_WORDS[s['people']]} "
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

    def _image_turns(self, rounds: int) -> list[tuple[str, str]]:
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
                    pair = (rng.choice(DETAIL_PROMPTS), self._detail_answer(scene))
                elif kind == "reason":
                    pair = self._reasoning(scene)
                else:
                    pair = self._short_qa(scene)
                if pair[0] not in asked:
                    break
            asked.add(pair[0])
            pairs.append(pair)
        return pairs

    def _text_turns(self, rounds: int) -> list[tuple[str, str]]:
        rng = self.rng
        topic, tips = rng.choice(TOPICS)
        listed = "; ".join(f"{ORDINALS[i]}, {tip}" for i, (tip, _) in enumerate(tips))
        pairs = [
            (
                f"Can you give me a few tips for {topic}?",
                f"Sure! Here are a few tips for {topic}: {listed}. Small habits like these "
                "make a real difference over time.",
            )
        ]
        for which in rng.sample(range(len(tips)), k=rounds - 1):
            tip, why = tips[which]
            question = rng.choice(FOLLOW_UPS).format(ordinal=ORDINALS[which])
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
            conversations = self._conversation(self._text_turns(rounds))
            if draw < SHARE_GPT_FIRST:
                conversations.insert(0, {"from": "gpt", "value": GREETING})
            return {"id": self._text_id(), "conversations": conversations}
        if self.images and rng.random() < SHARE_REPEATED_IMAGE:
            record_id, image = rng.choice(self.images)
        else:
            record_id, image = self._new_image()
        conversations = self._conversation(self._image_turns(rounds))
        first = conversations[0]["value"]
        at_end = rng.random() < SHARE_TAG_AT_END
        conversations[0]["value"] = f"{first}\n<image>" if at_end else f"<image>\n{first}"
        return {"id": record_id, "image": image, "conversations": conversations}

    @staticmethod
    def _conversation(pairs: list[tuple[str, str]]) -> list[dict]:
        turns = []
        for question, answer in pairs:
            turns.append({"from": "human", "value": question})
            turns.append({"from": "gpt", "value": answer})
        return turns


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
