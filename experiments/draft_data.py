"""Training prompts for the trained draft: built offline from templates and from text that
every Python install has (the language reference in `pydoc_data` and the standard
library's own docstrings and functions), in the six categories of the embedded suite.
None of them is, or quotes, an evaluation prompt (`check_disjoint`)."""

import ast
import random
import sysconfig
import textwrap
from pathlib import Path

import pydoc_data.topics

ACTIVITIES = [
    "learning to cook", "saving money each month", "sleeping better", "starting to run", "keeping a journal",
    "learning a new language", "organizing a small kitchen", "studying for exams", "working from home",
    "making friends in a new city", "caring for a cat", "growing tomatoes", "planning a road trip",
    "reducing screen time", "reading more books", "staying calm before a presentation", "drinking more water",
    "cleaning a messy garage", "painting a bedroom", "training a puppy", "packing for a camping trip",
]
CONCEPTS = [
    "photosynthesis", "gravity", "how vaccines work", "why the sky is blue", "inflation", "how a bicycle stays up",
    "the water cycle", "how the internet sends a message", "why we have seasons", "compound interest", "echoes",
    "how bees make honey", "volcanoes", "how a refrigerator keeps food cold", "the moon's phases", "recycling",
    "how airplanes fly", "what a computer's memory does", "tides", "how plants drink water", "static electricity",
]
AUDIENCES = ["a 7-year-old", "a 12-year-old", "a busy adult", "a new employee", "a grandparent", "a high-school student"]
CODE_TASKS = [
    ("count_vowels(text)", "returns how many vowels the string contains"),
    ("reverse_words(sentence)", "returns the sentence with the order of its words reversed"),
    ("is_prime(n)", "returns True when n is a prime number"),
    ("flatten(nested)", "turns a list of lists into one flat list"),
    ("word_frequencies(text)", "returns a dict from each word to how often it appears"),
    ("fibonacci(n)", "returns the first n Fibonacci numbers as a list"),
    ("merge_sorted(a, b)", "merges two sorted lists into one sorted list"),
    ("remove_duplicates(items)", "removes duplicates from a list while keeping the original order"),
    ("celsius_to_fahrenheit(c)", "converts a temperature from Celsius to Fahrenheit"),
    ("second_largest(numbers)", "returns the second largest distinct number in a list"),
    ("chunk(items, size)", "splits a list into chunks of the given size"),
    ("capitalize_words(text)", "capitalizes the first letter of every word"),
    ("average(numbers)", "returns the mean of a list of numbers, or None for an empty list"),
    ("count_lines(path)", "returns the number of lines in a text file"),
    ("gcd(a, b)", "returns the greatest common divisor of two integers"),
    ("is_anagram(a, b)", "tells whether two words are anagrams of each other"),
    ("running_total(numbers)", "returns the running totals of a list of numbers"),
    ("digits_sum(n)", "returns the sum of the digits of a non-negative integer"),
]
NAMES = ["Maya", "Omar", "Lena", "Tom", "Priya", "Jonas", "Aiko", "Carlos", "Nadia", "Sam", "Ivy", "Ben"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "bottles", "plants"]
MATH = [
    "{a} has {x} {item}. {b} gives {a} {y} more, and then {a} gives away {z}. How many {item} does {a} have now?",
    "A box holds {y} {item}. How many boxes are needed for {x} {item}?",
    "{a} buys {y} packs of {item}. Each pack costs {z} dollars. How much does {a} spend in total?",
    "{a} reads {y} pages every day. How many days does it take to read a book with {x} pages?",
    "A train travels at {y} kilometers per hour for {z} hours. How far does it go?",
    "{a} has {x} dollars and spends a quarter of it on {item}. How much money is left?",
    "There are {x} {item} shared equally among {z} friends. How many does each friend get, and how many are left over?",
]
STYLE_REWRITES = [
    "Rewrite the following text in plain words that a 10-year-old can follow.",
    "Rewrite the following text as a short bulleted list of its main points.",
    "Rewrite the following text in a more formal tone.",
    "Shorten the following text to about half its length without losing the key facts.",
    "Rewrite the following text in the first person, as if you were explaining it to a friend.",
]
QUESTIONS = [
    "What is the main idea of the passage?", "Which details in the passage are the most important, and why?",
    "What would be a good title for this passage?", "What problem does the passage describe, and what solution does it give?",
    "List two facts stated in the passage.",
]


def paragraphs(min_chars: int = 250, max_chars: int = 900) -> list[str]:
    """English paragraphs from the Python language reference shipped with the interpreter."""
    found = []
    for text in pydoc_data.topics.topics.values():
        for block in text.split("\n\n"):
            block = " ".join(line.strip() for line in block.splitlines())
            if min_chars <= len(block) <= max_chars and block[0].isupper() and "::=" not in block and ">>>" not in block:
                found.append(block)
    return found


def stdlib_functions(max_lines: int = 25, limit: int = 400) -> list[str]:
    """Short plain functions from the standard library's source, docstrings removed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(root.glob("*.py")):
        try:
            source = path.read_text()
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and 4 <= node.end_lineno - node.lineno <= max_lines:
                if ast.get_docstring(node):
                    node.body = node.body[1:] or [ast.Pass()]
                found.append(ast.unparse(node))
        if len(found) >= limit:
            break
    return found


def training_prompts(count: int, seed: int = 0) -> list[dict]:
    """`count` distinct prompts, cycling over the six categories: {id, category, prompt}."""
    rng = random.Random(seed)
    texts, functions = paragraphs(), stdlib_functions()
    makers = {
        "chat": lambda: rng.choice([
            f"Give me {rng.choice(['three', 'four', 'five'])} practical tips for {rng.choice(ACTIVITIES)}.",
            f"Explain {rng.choice(CONCEPTS)} to {rng.choice(AUDIENCES)}.",
            f"What are the pros and cons of {rng.choice(ACTIVITIES)}? Answer briefly.",
            f"Write a short, friendly message encouraging a friend who is {rng.choice(ACTIVITIES)}.",
        ]),
        "code": lambda: rng.choice([
            "Write a Python function called {} that {}. Include a short docstring.".format(*rng.choice(CODE_TASKS)),
            f"Explain what this Python function does, step by step:\n\n{rng.choice(functions)}",
            f"Add a docstring and type hints to this Python function:\n\n{rng.choice(functions)}",
        ]),
        "summarization": lambda: f"Summarize the following text in {rng.choice(['one sentence', '2-3 sentences', 'three bullet points'])}:\n\n{rng.choice(texts)}",
        "qa": lambda: f"Read the passage and answer the question.\n\nPassage: {rng.choice(texts)}\n\nQuestion: {rng.choice(QUESTIONS)}",
        "math": lambda: rng.choice(MATH).format(
            a=rng.choice(NAMES), b=rng.choice(NAMES), item=rng.choice(ITEMS), x=rng.randrange(20, 400),
            y=rng.randrange(2, 30), z=rng.randrange(2, 12)) + " Explain your reasoning step by step.",
        "rewrite": lambda: f"{rng.choice(STYLE_REWRITES)}\n\n{rng.choice(texts)}",
    }
    prompts, seen = [], set()
    while len(prompts) < count:
        for category, make in makers.items():
            text = make()
            if text not in seen and len(prompts) < count:
                seen.add(text)
                prompts.append({"id": f"train-{len(prompts)}", "category": category, "prompt": text})
    return prompts


def check_disjoint(train: list[str], evaluation: list[str], window: int = 60) -> None:
    """Raise if a training prompt equals, or shares a `window`-character span with, an evaluation prompt."""
    spans = {text[i : i + window] for text in evaluation for i in range(0, max(1, len(text) - window + 1), window // 2)}
    for text in train:
        if text in evaluation or any(text[i : i + window] in spans for i in range(max(1, len(text) - window + 1))):
            raise ValueError(f"training prompt overlaps an evaluation prompt: {textwrap.shorten(text, 80)!r}")
