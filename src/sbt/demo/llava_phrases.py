"""The words the synthetic LLaVA-format records of `sbt.demo.llava` are made of.

The demo collection's everyday scenes and text-only topics, and two smaller vocabularies:
the test suite's tiny corpus and the GPU check's filler answers. Each draw in the
generator picks from these lists in order, so changing a list changes the records (the
committed demo file, the tiny test tokenizer and golden numbers built on them).
"""

from __future__ import annotations

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

# The test suite's tiny corpus (tests/conftest.py, fixture tiny_records).
TINY_SUBJECTS = ["cat", "dog", "man", "woman", "bus", "train", "kite", "pizza", "horse", "boat"]
TINY_PLACES = ["on a table", "in a park", "near the river", "on the street", "at the beach"]
TINY_COLORS = ["red", "blue", "green", "white", "black", "yellow", "brown"]

# The GPU check's answers: random words, each at least one token, so an answer of n words
# fills a sequence of n tokens (sbt.random_backbone trains its tokenizer on them).
FILLER_WORDS = (
    "the a picture shows man woman dog cat bus train kite pizza horse boat table park river "
    "street beach red blue green white black yellow brown is on in near at with and of "
    "standing sitting running flying parked holding next to under behind small large old "
    "young bright dark sunny cloudy day evening people group two three many some"
).split()
FILLER_QUESTION = "What does picture {} show?"
