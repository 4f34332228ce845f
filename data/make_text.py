"""Write data/text/news.csv: 2,000 short news-like headlines in 4 topics (deterministic, standard library only).

Run from the repo root:  python data/make_text.py

Each headline is built from one of its topic's sentence patterns, filled with the topic's nouns, verbs and
adjectives and with words every topic shares (days, places, numbers); one headline in six also borrows a noun
from another topic, and one in twenty-five carries the label of another topic (label noise), so that no
classifier reaches 100%. The same seed writes the same bytes. Columns: ``text,label`` (label: sports, weather,
food, tech), 500 rows per topic, shuffled.
"""

from __future__ import annotations

import csv
import os
import random

TOPICS = {
    "sports": {
        "nouns": "team coach striker goalkeeper league match season final title derby fans stadium captain referee "
        "transfer injury penalty tournament champion midfielder".split(),
        "verbs": "beats wins loses signs draws scores defends clinches misses celebrates".split(),
        "adjectives": "late dramatic unbeaten relegated home away record-breaking injured young veteran".split(),
        "patterns": [
            "{adj} {noun} {verb} the {noun} in {place}",
            "{noun} {verb} {number} goals as {noun} stays {adj}",
            "{place} {noun} {verb} after {adj} {noun} on {day}",
            "the {noun} says the {noun} {verb} nothing yet",
            "{number} {noun}s out before the {adj} {noun}",
        ],
    },
    "weather": {
        "nouns": "storm rain snow heatwave forecast wind frost flood drought cloud sunshine temperature thunder "
        "fog hail gale showers humidity pressure warning".split(),
        "verbs": "hits sweeps brings clears returns eases lingers spreads batters threatens".split(),
        "adjectives": "heavy mild freezing warm wet dry cold stormy humid sunny".split(),
        "patterns": [
            "{adj} {noun} {verb} {place} on {day}",
            "{noun} {verb} as {adj} {noun} moves in",
            "forecasters expect {adj} {noun} and {number} mm of {noun}",
            "{noun} warning for {place} until {day}",
            "the {noun} {verb} with {adj} {noun} after {number} days",
        ],
    },
    "food": {
        "nouns": "recipe chef restaurant bakery soup bread pasta cheese dessert menu kitchen sauce salad "
        "market harvest coffee wine festival dinner flavour".split(),
        "verbs": "opens serves tastes bakes cooks reviews launches sells roasts pairs".split(),
        "adjectives": "fresh spicy sweet seasonal crispy local homemade vegan rich tender".split(),
        "patterns": [
            "{adj} {noun} {verb} in {place}",
            "{noun} {verb} a {adj} {noun} for {day}",
            "how to make {adj} {noun} with {number} ingredients",
            "the {noun} that {verb} the best {noun} in {place}",
            "{number} {adj} {noun}s to try this {day}",
        ],
    },
    "tech": {
        "nouns": "startup software chip phone app network robot laptop server battery update cloud data "
        "algorithm browser security developer processor screen platform".split(),
        "verbs": "launches releases patches upgrades unveils hacks acquires tests ships delays".split(),
        "adjectives": "new faster open-source wireless secure cheaper smart digital mobile beta".split(),
        "patterns": [
            "{noun} {verb} {adj} {noun} in {place}",
            "{adj} {noun} {verb} {number} million users",
            "the {noun} {verb} a {adj} {noun} on {day}",
            "why the {adj} {noun} {verb} the {noun}",
            "{place} {noun} {verb} {adj} {noun} update",
        ],
    },
}
SHARED = {
    "place": "London Paris Berlin Madrid Rome Oslo Lisbon Dublin Vienna Prague Leeds Porto".split(),
    "day": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday weekend".split(),
}
ROWS_PER_TOPIC = 500
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "text", "news.csv")


def fill(rng: random.Random, key: str, words: dict, noun) -> str:
    """One `{key}` of a pattern: a noun (``noun()``), verb or adjective of the topic, a number, a place or a day."""
    if key == "noun":
        return noun()
    if key in ("verb", "adj"):
        return rng.choice(words["verbs" if key == "verb" else "adjectives"])
    if key == "number":
        return str(rng.randint(2, 90))
    return rng.choice(SHARED[key])


def headline(rng: random.Random, topic: str) -> str:
    words = TOPICS[topic]
    others = [t for t in TOPICS if t != topic]

    def noun() -> str:  # one noun in six comes from another topic
        source = TOPICS[rng.choice(others)] if rng.random() < 1 / 6 else words
        return rng.choice(source["nouns"])

    text = rng.choice(words["patterns"])
    while "{" in text:
        head, rest = text.split("{", 1)
        key, tail = rest.split("}", 1)
        text = head + fill(rng, key, words, noun) + tail
    return text[0].upper() + text[1:]


def main() -> None:
    rng = random.Random(0)
    rows = []
    for topic in TOPICS:
        for _ in range(ROWS_PER_TOPIC):
            label = rng.choice([t for t in TOPICS if t != topic]) if rng.random() < 1 / 25 else topic
            rows.append((headline(rng, topic), label))
    rng.shuffle(rows)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} headlines to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
