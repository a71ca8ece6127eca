"""Training prompts for the trained draft and the Medusa heads, built offline in the six
categories of the embedded suite: templates over hand-written everyday topics, the Python
standard library's own functions, and passages. Passages come from two places: the language
reference that every Python install has (`pydoc_data`), and texts the target itself writes
first (`passage_prompts`: news reports, stories, notices, explanations), so that the texts to
summarize, question and rewrite look like everyday prose rather than only Python manuals.
None of them is, or quotes, an evaluation prompt (`check_disjoint`)."""

import ast
import pydoc_data.topics
import random
import sysconfig
import textwrap
from pathlib import Path

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
    "Rewrite the following text in the past tense.",
    "Rewrite the following text so that a child can understand it.",
    "Make the following text more concise, keeping the important information.",
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


TOPICS = [
    "a new bike lane on a busy street", "a school science fair", "a farmers' market opening for the season",
    "a lost dog found after a week", "a power cut during a storm", "a bakery that donates unsold bread",
    "a city planting trees along its river", "a museum's new dinosaur exhibit", "a library lending tools",
    "a youth football team's first trophy", "volunteers cleaning up a beach", "a bridge closed for repairs",
    "a heat wave and how people kept cool", "a small town's first music festival", "a hospital opening a new wing",
    "a bus route that now runs at night", "a student who built a weather station", "a rescue of a cat from a tree",
    "a community kitchen that teaches cooking", "a company letting staff work four days a week",
    "how owls hunt at night", "why leaves change color in autumn", "how a compass works", "how glass is made",
    "the life of a honeybee colony", "how coral reefs grow", "why salt melts ice", "how a lighthouse warns ships",
    "how the heart pumps blood", "what causes thunder", "how paper is recycled", "how whales communicate",
    "how bread dough rises", "how a dam makes electricity", "why some birds migrate", "how earthquakes happen",
    "the history of the bicycle", "how maps were made before satellites", "why we need sleep", "how soap cleans",
    "a new rule about parking at the office", "the office moving to a new floor", "a team lunch next Friday",
    "changes to the school's lunch menu", "a fire drill next week", "the gym closing early for cleaning",
    "a neighborhood yard sale", "a reminder to return borrowed books", "new opening hours at a clinic",
]
CHARACTERS = [
    "an old fisherman", "a shy girl who loves drawing", "a baker who wakes up at four", "a boy afraid of the dark",
    "a retired teacher", "a young nurse on her first night shift", "a farmer during a dry summer",
    "a student moving to a new country", "a mail carrier in a snowy village", "a girl learning to swim",
    "a man who repairs old clocks", "two friends who open a food truck", "a grandmother who plants a garden",
]
MATTERS = ["finds an unexpected letter", "gets lost on the way home", "tries something new for the first time",
           "helps a stranger", "loses something important", "wins a small contest", "makes a hard decision"]
WRITERS = ["the office manager", "a school principal", "the building manager", "a club coach", "the library staff"]
READERS = ["all staff", "parents", "residents", "club members", "visitors"]
PASSAGE_REQUESTS = [
    "Write a short local news report of about 120 words about {topic}.",
    "Write a one-paragraph story in which {character} {matter}.",
    "Write an informative paragraph for a general reader about {topic}.",
    "Write a short notice from {writer} to {readers} about {topic}.",
]
MORE_ACTIVITIES = [
    "hosting a birthday party on a budget", "moving to a new apartment", "starting a small vegetable garden",
    "getting ready for a job interview", "learning to play the guitar", "taking better photos with a phone",
    "keeping a clean and tidy desk", "cooking healthy meals for a family", "preparing for a long flight",
    "helping a child with homework", "walking more every day", "saving energy at home", "visiting a museum",
]
PAIRS = [("a cat", "a dog"), ("tea", "coffee"), ("a train", "a plane"), ("renting", "buying a home"),
         ("paper books", "e-books"), ("running", "swimming"), ("a laptop", "a tablet"), ("the sea", "the mountains"),
         ("cooking at home", "eating out"), ("a city", "the countryside"), ("a bus", "a bicycle")]
MESSAGES = ["inviting friends to a picnic on Sunday", "thanking a neighbor for watering my plants",
            "asking a colleague to swap shifts", "congratulating a friend on a new job",
            "reminding my team about tomorrow's meeting", "apologizing for missing a friend's party",
            "welcoming a new member to our book club"]
SQL_TASKS = [
    "returns every customer's name with the number of orders they placed, from customers(id, name) and orders(id, customer_id, total)",
    "finds the three most expensive products in products(id, name, price)",
    "lists the employees who earn more than the average salary, from employees(id, name, salary)",
    "counts the students in each class, from students(id, name, class_id) and classes(id, title)",
]
SNIPPET_WORDS = ["pear", "plum", "melon", "grape", "lime", "cherry", "mango", "peach", "lemon", "date"]
MISTAKES = {" their ": " there ", " was ": " were ", " is ": " are ", " went ": " goes ", " have ": " has ",
            " its ": " it's ", " to ": " too ", "ed ": " ", " a ": " an "}
MORE_MATH = [
    "A garden is {x} meters long and {y} meters wide. How many meters of fence go all the way around it?",
    "{a} buys {y} notebooks at {z} dollars each and pays with a {w}-dollar bill. How much change does {a} get?",
    "{a} had {x} {item} and gave one quarter of them to {b}. How many are left?",
    "A shop sells {item} in packs of {z}. How many packs are needed for {x} {item}, and how many are spare?",
    "A jacket costs {x} dollars and is on sale for {p} percent off. What is the sale price?",
    "A car uses {z} liters of fuel per 100 kilometers. How much fuel does it need for {x} kilometers?",
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


def passage_prompts(count: int, seed: int = 0) -> list[dict]:
    """`count` distinct requests for everyday texts (stage 1): the target's answers become passages."""
    rng = random.Random(seed + 1)
    prompts, seen = [], set()
    for _ in range(50 * count):
        text = rng.choice(PASSAGE_REQUESTS).format(topic=rng.choice(TOPICS), character=rng.choice(CHARACTERS),
                                                   matter=rng.choice(MATTERS), writer=rng.choice(WRITERS),
                                                   readers=rng.choice(READERS))
        if len(prompts) == count:
            return prompts
        if text not in seen:
            seen.add(text)
            prompts.append({"id": f"passage-{len(prompts)}", "category": "passage", "prompt": text})
    raise ValueError(f"only {len(prompts)} distinct passage requests found; ask for fewer")


def with_mistakes(text: str, rng: random.Random) -> str:
    """The text with a few grammar and spelling mistakes, for "fix the mistakes" prompts."""
    for right, wrong in rng.sample(sorted(MISTAKES.items()), 4):
        text = text.replace(right, wrong, 1)
    return text


def code_snippet(rng: random.Random) -> str:
    """A few lines of Python whose output can be worked out by hand."""
    words = rng.sample(SNIPPET_WORDS, 4)
    n = rng.randrange(3, 6)
    return rng.choice([
        f"words = {words}\nlong = [w.title() for w in words if len(w) > {n}]\nprint(long)",
        f"total = 0\nfor i in range({n}, {n + 5}):\n    total += i * 2\nprint(total)",
        f"counts = {{}}\nfor w in {words + words[:2]}:\n    counts[w] = counts.get(w, 0) + 1\nprint(counts)",
        f"text = \"{' '.join(words)}\"\nprint(text.split()[::-1], len(text))",
    ])


def buggy(function: str, rng: random.Random) -> str:
    """A standard-library function with one operator swapped (for "find the bug" prompts)."""
    swaps = [(" < ", " <= "), (" > ", " >= "), (" + 1", " - 1"), (" == ", " != "), (" and ", " or ")]
    present = [s for s in swaps if s[0] in function]
    if not present:
        return function
    right, wrong = rng.choice(present)
    return function.replace(right, wrong, 1)


def training_prompts(count: int, seed: int = 0, passages: list[str] = ()) -> list[dict]:
    """`count` distinct prompts, cycling over the six categories: {id, category, prompt}. Texts to
    summarize, question and rewrite come from `passages` (the target's own, see passage_prompts)
    and the language reference, half and half when passages are given."""
    rng = random.Random(seed)
    reference, functions = paragraphs(), stdlib_functions()
    text = (lambda: rng.choice(passages if passages and rng.random() < 0.5 else reference))
    n = lambda: rng.choice(["three", "four", "five"])
    makers = {
        "chat": lambda: rng.choice([
            f"Give me {n()} practical tips for {rng.choice(ACTIVITIES + MORE_ACTIVITIES)}.",
            f"Explain {rng.choice(CONCEPTS)} to {rng.choice(AUDIENCES)}.",
            f"What are the pros and cons of {rng.choice(ACTIVITIES)}? Answer briefly.",
            f"Write a short, friendly message encouraging a friend who is {rng.choice(ACTIVITIES)}.",
            "What are the main differences between {} and {}? Answer in a short bulleted list.".format(*rng.choice(PAIRS)),
            f"Write a friendly two-sentence message {rng.choice(MESSAGES)}.",
            f"Suggest a simple plan for a beginner who is {rng.choice(ACTIVITIES + MORE_ACTIVITIES)}.",
            f"List {n()} questions people often ask about {rng.choice(CONCEPTS)}, each with a one-line answer.",
            f"Explain {rng.choice(TOPICS[20:40])} in one short paragraph for {rng.choice(AUDIENCES)}.",
        ]),
        "code": lambda: rng.choice([
            "Write a Python function called {} that {}. Include a short docstring.".format(*rng.choice(CODE_TASKS)),
            f"Explain what this Python function does, step by step:\n\n{rng.choice(functions)}",
            f"Add a docstring and type hints to this Python function:\n\n{rng.choice(functions)}",
            f"This Python function has a bug. Find it and give the corrected code.\n\n{buggy(rng.choice(functions), rng)}",
            f"Explain in plain words what this code prints, line by line:\n\n{code_snippet(rng)}",
            f"Write a SQL query that {rng.choice(SQL_TASKS)}.",
            "Write the same function in JavaScript: a function {} that {}.".format(*rng.choice(CODE_TASKS)),
        ]),
        "summarization": lambda: f"Summarize the following text in {rng.choice(['one sentence', '2-3 sentences', 'three bullet points'])}:\n\n{text()}",
        "qa": lambda: f"Read the passage and answer the question.\n\nPassage: {text()}\n\nQuestion: {rng.choice(QUESTIONS)}",
        "math": lambda: rng.choice(MATH + MORE_MATH).format(
            a=rng.choice(NAMES), b=rng.choice(NAMES), item=rng.choice(ITEMS), x=rng.randrange(20, 400),
            y=rng.randrange(2, 30), z=rng.randrange(2, 12), w=rng.choice([20, 50, 100]), p=rng.choice([10, 20, 25, 30, 50]),
        ) + " Explain your reasoning step by step.",
        "rewrite": lambda: rng.choice([
            f"{rng.choice(STYLE_REWRITES)}\n\n{text()}",
            f"Fix the grammar and spelling mistakes in this text, keeping its meaning:\n\n{with_mistakes(text(), rng)}",
        ]),
    }
    prompts, seen = [], set()
    while len(prompts) < count:
        for category, make in makers.items():
            prompt = make()
            if prompt not in seen and len(prompts) < count:
                seen.add(prompt)
                prompts.append({"id": f"train-{len(prompts)}", "category": category, "prompt": prompt})
    return prompts


def check_disjoint(train: list[str], evaluation: list[str], window: int = 60) -> None:
    """Raise if a training prompt equals, or shares a `window`-character span with, an evaluation prompt."""
    spans = evaluation_spans(evaluation, window)
    for text in train:
        if text in evaluation or overlaps(text, spans, window):
            raise ValueError(f"training prompt overlaps an evaluation prompt: {textwrap.shorten(text, 80)!r}")


def evaluation_spans(evaluation: list[str], window: int = 60) -> set[str]:
    """Every evaluation prompt's `window`-character spans starting at multiples of window / 2."""
    return {text[i : i + window] for text in evaluation for i in range(0, max(1, len(text) - window + 1), window // 2)}


def overlaps(text: str, spans: set[str], window: int = 60) -> bool:
    return any(text[i : i + window] in spans for i in range(max(1, len(text) - window + 1)))
