"""Sentences whose words do not reveal an emotion, as in paper 000's corpus ("the text read aloud is unrelated
to the speaker's emotional state"): plain statements about times, places, objects and routines.

The bank is built from templates and fixed word lists, so it is the same on every machine; no word in it is an
emotion word (checked by a test against a list of emotion words).
"""

from __future__ import annotations

import itertools

_TEMPLATES = (
    "The {thing} is on the {furniture} in the {room}.",
    "The {vehicle} leaves from {place} at {time}.",
    "Please put the {thing} next to the {furniture}.",
    "We will meet at {place} on {day}.",
    "The {room} on the {floor} floor has {number} windows.",
    "{name} said the {thing} would arrive on {day}.",
    "The {vehicle} to {city} stops at {place}.",
    "There are {number} chairs in the {room}.",
    "I think the {thing} is in the {room}.",
    "{name} moved the {furniture} to the {room} on {day}.",
    "The report about {city} is due on {day}.",
    "Turn left after {place} and walk to the {room}.",
)

WORDS = {
    "thing": ("blue folder", "small box", "map", "key", "lamp", "notebook", "umbrella", "printer", "kettle",
              "calendar", "green bag", "phone charger"),
    "furniture": ("table", "shelf", "desk", "cabinet", "window sill", "bench", "counter"),
    "room": ("kitchen", "office", "hallway", "library", "garage", "meeting room", "basement"),
    "vehicle": ("train", "bus", "ferry", "tram", "shuttle"),
    "place": ("the station", "the corner", "platform four", "the main gate", "the post office", "the bakery"),
    "time": ("half past nine", "seven o'clock", "noon", "ten fifteen", "a quarter to six", "eight thirty"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"),
    "floor": ("first", "second", "third", "fourth"),
    "number": ("two", "three", "four", "five", "six", "eight"),
    "name": ("Anna", "Tom", "Maria", "David", "Lena", "Paul", "Sara", "Ken"),
    "city": ("Boston", "Leeds", "Denver", "Oslo", "Porto", "Dublin"),
}


def sentence_bank(size: int = 400) -> list[str]:
    """``size`` distinct sentences, the same list on every machine (a deterministic walk over the templates)."""
    out: list[str] = []
    seen: set[str] = set()
    # Walk every template with the word lists rotated by a stride, so consecutive sentences differ in every slot.
    for step in itertools.count():
        for t_i, template in enumerate(_TEMPLATES):
            fields = {}
            for s_i, (slot, words) in enumerate(WORDS.items()):
                fields[slot] = words[(step * (s_i + 2) + t_i * 3 + s_i) % len(words)]
            s = template.format(**fields)
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) >= size:
                    return out
        if step > 10 * size:  # the lists cannot make that many distinct sentences
            return out
    return out


#: Words that would give an emotion away; the bank must contain none of them.
EMOTION_WORDS = frozenset(
    "angry anger furious mad hate happy joy glad love wonderful great sad sorry cry tears unhappy lonely afraid "
    "scared fear fearful terrified worried disgust disgusting gross awful surprise surprised wow amazing shocked "
    "calm bored excited upset".split()
)
