"""A small demo dataset headfit writes itself, so the defaults train with no download.

Sentences about four topics (sports, food, weather, technology) built from templates: 400 train, 100 val and
100 test rows. `multilabel=True` writes sentences that mention one, two or three topics, with their labels
as a comma-separated string ("food,weather"), the way many real multi-label files store them.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

from headfit.data.datamodule import TextClassificationDataModule

CLAUSES = {
    "sports": ["the {team} won the match in the final minute", "our striker scored twice against the {team}",
               "the coach praised the defence after a hard training session", "the {team} lost the cup final on penalties",
               "the referee sent off two players in the derby", "she ran the marathon in under three hours",
               "the goalkeeper saved a penalty in the second half", "fans filled the stadium to watch the {team}"],
    "food": ["the chef served a {dish} with fresh herbs", "we baked bread and a {dish} for the party",
             "the restaurant downtown makes the best {dish}", "my grandmother's {dish} recipe uses too much garlic",
             "the market sells ripe tomatoes and cheap cheese", "he burned the {dish} while the pasta boiled",
             "this soup needs more salt and pepper", "the bakery ran out of croissants before noon"],
    "weather": ["heavy rain and strong wind are expected {when}", "the forecast promises sunshine {when}",
                "a thunderstorm knocked down trees {when}", "snow covered the roads {when}",
                "it was freezing cold with thick fog {when}", "the heatwave pushed temperatures past forty degrees",
                "a sudden hailstorm flooded the streets {when}", "clouds cleared and the temperature rose {when}"],
    "technology": ["the new {device} ships with a faster processor", "the software update broke the {device}'s battery",
                   "engineers released an open source compiler", "my {device} keeps crashing after the upgrade",
                   "the startup trained a neural network on the cloud", "the {device} has a brighter screen and more memory",
                   "hackers exploited a bug in the web browser", "the app now syncs files across every {device}"],
}
SLOTS = {"team": ["home team", "visitors", "champions", "underdogs", "national side"],
         "dish": ["lasagna", "curry", "apple pie", "risotto", "stew"],
         "when": ["tonight", "this weekend", "on monday", "all week", "tomorrow morning"],
         "device": ["phone", "laptop", "tablet", "smartwatch", "router"]}
# Phrases and clauses about another topic, added to some sentences. The label follows the main clause, so
# the model has to learn more than "a weather word means weather", and accuracy rises over the epochs.
ASIDES = {"sports": ["after the game", "before the match", "during the half-time break"],
          "food": ["over a long lunch", "while dinner was cooking", "with a slice of cake"],
          "weather": ["in the pouring rain", "despite the snow", "under a scorching sun"],
          "technology": ["according to an app", "in a video online", "on a livestream"]}
LINKS = ["while", "even though", "just as", "although"]
OPENERS = ["", "", "apparently ", "yesterday ", "i heard that ", "the news said ", "honestly "]
SIZES = {"train": 400, "val": 100, "test": 100}


def _clause(topic: str, rng: random.Random) -> str:
    template = rng.choice(CLAUSES[topic])
    return template.format(**{slot: rng.choice(values) for slot, values in SLOTS.items()})


def _row(rng: random.Random, multilabel: bool) -> tuple[str, str]:
    count = rng.choice([1, 1, 2, 2, 3]) if multilabel else 1
    topics = rng.sample(sorted(CLAUSES), count)
    text = rng.choice(OPENERS) + " and ".join(_clause(topic, rng) for topic in topics)
    others = [topic for topic in sorted(CLAUSES) if topic not in topics]
    if not multilabel and rng.random() < 0.5:  # a whole clause about another topic; the label is the main clause's
        text += f", {rng.choice(LINKS)} {_clause(rng.choice(others), rng)}"
    elif rng.random() < 0.6:
        text += " " + rng.choice(ASIDES[rng.choice(others)])
    return text[0].upper() + text[1:] + ".", ",".join(sorted(topics))


def write_demo(directory: str | Path, multilabel: bool = False, seed: int = 0) -> dict[str, Path]:
    """Write train/val/test CSVs (columns `text`, `label`) into `directory`; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: dict[str, str] = {}  # text -> labels; every sentence once, so no split repeats another's
    while len(rows) < sum(SIZES.values()):
        text, labels = _row(rng, multilabel)
        rows.setdefault(text, labels)
    unique = iter(rows.items())
    paths = {}
    for split, size in SIZES.items():
        paths[split] = directory / f"{split}.csv"
        stream = io.StringIO(newline="")
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        writer.writerows(next(unique) for _ in range(size))
        content = stream.getvalue().encode("utf-8")
        # A file already there is left alone: DDP ranks 1.. and reruns in the same directory write nothing,
        # and its cached token ids (keyed by size and modification time) stay valid.
        if not paths[split].is_file() or paths[split].read_bytes() != content:
            paths[split].write_bytes(content)
    return paths


def demo_datamodule(directory: str | Path, multilabel: bool = False, **options: Any) -> TextClassificationDataModule:
    """Write the demo data into `directory` and return a data module over it."""
    paths = write_demo(directory, multilabel=multilabel)
    return TextClassificationDataModule(train_path=str(paths["train"]), val_path=str(paths["val"]),
                                        test_path=str(paths["test"]), **options)
