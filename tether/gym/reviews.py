"""The embedded default task: short product reviews.

A prompt asks for a review of a product; a response is a few sentences about the product's aspects,
each carrying a sentiment word. The instruction data mixes positive, mixed and negative reviews, so an
instruction-tuned policy is mediocre under a gold reward that prefers positive, varied, on-topic text —
room for alignment to improve, and (with a learned reward model) room to hack it by repeating positive
words. Everything is lower-case, so a tokenizer trained on the corpus stays small.
"""

from __future__ import annotations

import random

from tether.gym.base import Task

PRODUCTS: dict[str, list[str]] = {
    "phone": ["battery", "screen", "camera", "price"],
    "laptop": ["keyboard", "screen", "battery", "speed"],
    "blender": ["motor", "lid", "noise", "price"],
    "novel": ["plot", "ending", "characters", "writing"],
    "movie": ["plot", "acting", "music", "ending"],
    "camera": ["lens", "battery", "grip", "price"],
    "jacket": ["fabric", "fit", "zipper", "color"],
    "hotel": ["room", "staff", "breakfast", "location"],
    "headphones": ["sound", "fit", "battery", "cable"],
    "backpack": ["straps", "zipper", "fabric", "size"],
    "kettle": ["handle", "lid", "noise", "speed"],
    "game": ["story", "music", "controls", "graphics"],
}

POSITIVE = ["great", "excellent", "wonderful", "superb", "lovely", "fantastic", "solid", "impressive"]
NEGATIVE = ["terrible", "awful", "poor", "disappointing", "flimsy", "bad", "boring", "weak"]
NEUTRAL = ["okay", "average", "fine", "decent", "ordinary", "acceptable"]

SENTENCES = [
    "the {aspect} is {adj}.",
    "i found the {aspect} {adj}.",
    "the {aspect} felt {adj}.",
    "honestly the {aspect} was {adj}.",
]
OPENINGS = ["this {product} is {adj}.", "i bought the {product} last month.", "my {product} arrived quickly."]
CLOSINGS = ["overall it is {adj}.", "i would call it {adj}.", "in short, {adj}."]
PROMPTS = [
    "write a review of the {product}.",
    "review the {product}.",
    "what do you think of the {product}?",
    "give a short review of the {product}.",
]

# The mix of tones in the instruction data: mediocre on purpose (see the module docstring).
TONES = {"positive": 0.35, "mixed": 0.35, "negative": 0.30}


def _adjective(rng: random.Random, tone: str) -> str:
    if tone == "mixed":
        tone = rng.choice(["positive", "negative", "neutral"])
    return rng.choice({"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}[tone])


def write_review(rng: random.Random, product: str, tone: str) -> str:
    """A review of ``product`` in ``tone``: an opening, 2–3 aspect sentences, a closing."""
    aspects = rng.sample(PRODUCTS[product], k=rng.randint(2, 3))
    parts = [rng.choice(OPENINGS).format(product=product, adj=_adjective(rng, tone))]
    for aspect in aspects:
        parts.append(rng.choice(SENTENCES).format(aspect=aspect, adj=_adjective(rng, tone)))
    parts.append(rng.choice(CLOSINGS).format(adj=_adjective(rng, tone)))
    return " ".join(parts)


class ReviewsTask(Task):
    """Product reviews; the default task of the embedded pipeline."""

    name = "reviews"

    def _tone(self, rng: random.Random) -> str:
        return rng.choices(list(TONES), weights=list(TONES.values()))[0]

    def sample_example(self, rng: random.Random) -> tuple[str, str]:
        product = rng.choice(sorted(PRODUCTS))
        prompt = rng.choice(PROMPTS).format(product=product)
        return prompt, write_review(rng, product, self._tone(rng))

    def document(self, rng: random.Random) -> str:
        product = rng.choice(sorted(PRODUCTS))
        return f"review of the {product}: " + write_review(rng, product, self._tone(rng))

    @staticmethod
    def product_of(prompt: str) -> str | None:
        """The product a prompt asks about (None when it names none)."""
        words = prompt.replace("?", " ").replace(".", " ").split()
        return next((w for w in words if w in PRODUCTS), None)
