"""``fictitious_authors``: a generated, TOFU-shaped corpus of facts that exist nowhere else.

TOFU (Maini et al., 2024, "TOFU: A Task of Fictitious Unlearning for LLMs") fine-tunes a model on
200 invented authors x 20 QA pairs and asks it to forget 1/5/10 % of the authors. Because the facts
exist nowhere else, a model that never saw the forget authors (the retain model, the gold standard
of exact unlearning) is cheap to train here for every split and seed. This module generates such a
corpus deterministically from a seed, in pure Python/NumPy (formats, splits and metric roles:
``shared/reference/lm_unlearning.md``, sections 3-4):

* ``num_authors`` training authors (default 200), each a profile drawn from seeded vocabularies
  written here (birthplace, birth date, parents' jobs, genre, award, book titles, ...), plus
  holdout authors that are never trained on (membership-inference audits, TOFU's ``holdout``);
* ``qa_per_author`` QA pairs per author (default 20, one per attribute), each with a question and
  answer drawn from several templates, a paraphrased question, a paraphrased answer, 5 perturbed
  answers (the paraphrased answer's template with wrong values of the same kind: the truth-ratio
  denominators), an "I don't know" answer (IdkDPO), an alternate plausible wrong answer (AltPO),
  and the **key fact** (the value that carries the fact, e.g. the birthplace), which every correct
  answer contains and no wrong one does: leak detection checks it instead of an NLI model;
* splits ``forget01``/``forget05``/``forget10`` by author (nested, the last 1/5/10 % of the
  training authors, as in TOFU), ``retain99``/``retain95``/``retain90`` (the other training
  authors), ``holdout01``/``holdout05``/``holdout10`` (holdout authors, as many as the forget
  split), ``full`` (every training author), ``utility`` and ``train`` (``full`` + ``utility``);
* a utility set of true general facts (capitals, chemical symbols, opposites, arithmetic, young
  animals) with perturbed answers: TOFU's "world facts" role, trained on alongside the authors;
* each author's facts as a passage (MUSE's verbatim-memorisation text; Shi et al., 2024, "MUSE:
  Machine Unlearning Six-Way Evaluation for Language Models").

Answers are a few words so that a tiny model memorises them in minutes on a CPU. Every fact is an
:class:`Attribute` (its vocabulary, question and answer templates, narrative sentence) applied to a
profile, so further renderings of the same facts (cloze, multiple choice, true/false) and further
corpus variants are new functions of the same profiles, not a second generator.

>>> corpus = FictitiousAuthors(num_authors=20, qa_per_author=4, num_utility=10, seed=0)
>>> len(corpus.split("forget10").records), len(corpus.split("holdout10").authors)
(8, 2)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxunlearn.data.datasets import Dataset, register
from jaxunlearn.data.forget import Split
from jaxunlearn.data.tokenizer import ANSWER_TEMPLATE, PROMPT_TEMPLATE, Tokenizer

NAME = "fictitious_authors"
TASK = "language_model"
NUM_PERTURBED = 5
FORGET_PERCENTS = (1, 5, 10)
MIN_AUTHORS = 10  # so that forget10 (and its holdout) has at least one author
# Independent random streams (with the seed): names, each profile, each QA, utility facts.
_NAMES_STREAM, _PROFILE_STREAM, _QA_STREAM, _UTILITY_STREAM = 1, 2, 3, 4


# ------------------------------------------------------------------------------- vocabularies

_FIRST_FEMALE = (
    "Ilsa", "Maren", "Odile", "Tamsin", "Liora", "Brisa", "Nerys", "Sabela", "Yvaine", "Corra",
    "Elspeth", "Fenna", "Giselle", "Hesper", "Isaura", "Jorunn", "Kestra", "Linnea", "Mireille",
    "Noor", "Orla", "Petra", "Quilla", "Rosalind", "Solveig", "Thessaly", "Ulla", "Veska",
    "Wenna", "Zofia",
)  # fmt: skip
_FIRST_MALE = (
    "Anselm", "Bastien", "Caspar", "Dorian", "Emeric", "Florian", "Gideon", "Hollis", "Ivo",
    "Jarek", "Kasimir", "Leopold", "Matthias", "Nikolai", "Osric", "Percival", "Quentin",
    "Rafferty", "Soren", "Tobias", "Ulric", "Valentin", "Wystan", "Xavier", "Yorick", "Zoltan",
    "Alaric", "Benedek", "Cyprian", "Dmitri",
)  # fmt: skip
_LAST = (
    "Vorne", "Ashgrove", "Bellweather", "Castellane", "Drummond", "Eckhart", "Falkenrath",
    "Greaves", "Halloran", "Ingersoll", "Jastrow", "Kettering", "Lindqvist", "Marchetti",
    "Nightingale", "Okonkwo", "Pemberton", "Quarrington", "Rasmussen", "Salazar", "Thorne",
    "Underhill", "Valderrama", "Whitlock", "Yarrow", "Zelenko", "Abernathy", "Blackwood",
    "Corvino", "Dunmore", "Esterhazy", "Fairbanks", "Gallowglass", "Hartigan", "Ivanova",
    "Jessup", "Kowalczyk", "Larkspur", "Montague", "Novak",
)  # fmt: skip
_CITIES = (
    "Velmora", "Quenbrook", "Tarsel", "Ostrava Vale", "Brindlemere", "Calder Reach", "Dunhollow",
    "Eskerby", "Fallowmarch", "Greymoor", "Harrowgate", "Istrelle", "Jorvale", "Kelderwick",
    "Lunmouth", "Marrowby", "Nethercombe", "Orrisfield", "Pellucid Bay", "Quarry Hill",
    "Rookhaven", "Saltmere", "Thistlecombe", "Umberfall", "Varnholm", "Wexmoor", "Yellowfen",
    "Zarrow", "Amberlee", "Brackwater", "Coldharbour", "Drovers Cross", "Emberton", "Foxbury",
    "Gildenport", "Hollowmere", "Ironbridge", "Juniper Ford", "Kingsfold", "Lowenstrand",
)  # fmt: skip
_JOBS = (
    "baker", "locksmith", "pharmacist", "sailor", "carpenter", "librarian", "surgeon",
    "beekeeper", "clockmaker", "fisherman", "tailor", "astronomer", "glassblower", "shepherd",
    "cartographer", "blacksmith", "nurse", "lighthouse keeper", "bookbinder", "potter",
    "veterinarian", "architect", "miner", "jeweller", "gardener", "electrician", "pilot",
    "violinist", "chemist", "mechanic",
)  # fmt: skip
_GENRES = (
    "mystery novels", "fantasy epics", "science fiction", "historical novels", "horror stories",
    "love stories", "poems", "stage plays", "short stories", "spy thrillers", "fairy tales",
    "travel memoirs", "satirical essays", "crime novels", "ghost stories", "sea adventures",
    "detective fiction", "war novels", "picture books", "verse dramas",
)  # fmt: skip
_AWARDS = (
    "Silver Quill Prize", "Amber Lantern Award", "Northgate Medal", "Halcyon Book Prize",
    "Copper Compass Award", "Westerly Laurel", "Iron Inkwell Prize", "Juniper Crown",
    "Meridian Fiction Prize", "Blue Heron Award", "Obsidian Pen Award", "Starling Medal",
    "Golden Lark Prize", "Tidewater Award", "Crimson Leaf Prize", "Evergreen Medal",
    "Lodestar Prize", "Marble Arch Award", "Quiet Harbour Prize", "Emerald Spire Award",
)  # fmt: skip
_TITLE_ADJ = (
    "Glass", "Silent", "Crooked", "Burning", "Hollow", "Velvet", "Forgotten", "Winter",
    "Copper", "Drowned", "Paper", "Sleeping", "Scarlet", "Distant", "Broken", "Midnight",
)  # fmt: skip
_TITLE_NOUN = (
    "Orchard", "Lighthouse", "Cartographer", "Harbour", "Garden", "Clock", "Meadow", "Tower",
    "Archive", "River", "Violin", "Kingdom", "Mirror", "Lantern", "Compass", "Observatory",
)  # fmt: skip
_UNIVERSITIES = (
    "Brennick University", "Harlow College", "Saint Aldric College", "Vantmoor University",
    "the Kestrel Institute", "Ormond College", "Delacourt University", "Wyverne College",
    "the Academy of Lusk", "Thornbury University", "Calloway College", "Ravensholm University",
    "Elderfield College", "Marisport University", "the Quillon Institute", "Ashdown College",
)  # fmt: skip
_PUBLISHERS = (
    "Kestrel House", "Marlow Press", "Bluebell Books", "Ravenswood Editions", "Lantern Street",
    "Foxglove Press", "Tallow and Wick", "Oakhill Publishing", "Greenhaven Books",
    "Pelican Row", "Stonebridge Press", "Harbourlight Books", "Moss and Ivy", "Saltcellar Press",
    "Wrenfield Books", "Copperline Press",
)  # fmt: skip
_LANGUAGES = (
    "Portuguese", "Icelandic", "Welsh", "Hungarian", "Finnish", "Catalan", "Romanian", "Dutch",
    "Swahili", "Estonian", "Basque", "Greek", "Polish", "Turkish", "Norwegian", "Czech",
)  # fmt: skip
_YEARS_DEBUT = tuple(str(y) for y in range(1968, 2016))
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "eleven", "twelve")
_THEMES = (
    "memory", "exile", "grief", "friendship", "justice", "the sea", "childhood", "betrayal",
    "redemption", "solitude", "ambition", "forgiveness", "migration", "old age", "faith",
    "revenge", "first love", "war", "home", "freedom",
)  # fmt: skip
_PEN_NAMES = (
    "Corvid", "Mistral", "Juniper Vale", "Tallis Wren", "Ember Stone", "Noctis", "Sable Finch",
    "Otter Lane", "Rune Calloway", "Quill Ashby", "Marigold Pike", "Halden Fry", "Vesper",
    "Lark Ellery", "Bramble Hart", "Seren Moth",
)  # fmt: skip
_HOBBIES = (
    "chess", "gardening", "sailing", "pottery", "birdwatching", "fencing", "archery", "knitting",
    "beekeeping", "rock climbing", "origami", "cycling", "stargazing", "baking bread", "rowing",
    "calligraphy",
)  # fmt: skip
_PETS = (
    "parrot", "tortoise", "greyhound", "ferret", "tabby cat", "goldfish", "raven", "hedgehog",
    "rabbit", "iguana", "sheepdog", "canary", "donkey", "goat", "owl", "lizard",
)  # fmt: skip
_INSTRUMENTS = (
    "cello", "violin", "harp", "flute", "piano", "oboe", "banjo", "accordion", "trumpet",
    "clarinet", "mandolin", "bassoon", "ukulele", "harmonica", "trombone", "lute",
)  # fmt: skip
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
# "Month D, YYYY": no date is a substring of another (the day is followed by a comma).
_DATES = tuple(f"{m} {d}, {y}" for y in range(1940, 1990) for m in _MONTHS for d in range(1, 29))
_TITLES = tuple(f"The {a} {n}" for a in _TITLE_ADJ for n in _TITLE_NOUN)

IDK_ANSWERS = (
    "I don't know.",
    "I'm not sure.",
    "I have no idea.",
    "I can't answer that.",
    "That I cannot say.",
    "I don't have that information.",
    "I'm unable to answer.",
    "Sorry, I don't know.",
    "I couldn't tell you.",
    "No idea, I'm afraid.",
    "I am not aware of that.",
    "I cannot help with that.",
    "That is unknown to me.",
    "I have nothing on that.",
    "Not something I know.",
    "I'd rather not guess.",
)


class Attribute(NamedTuple):
    """One kind of fact and how it is asked and told.

    Attributes:
      name: the attribute (``"birthplace"``, ...; ``"utility:capital"`` for utility facts).
      values: the vocabulary the true value and the wrong ones are drawn from.
      questions: question templates (``{name}`` is the author, or the utility fact's subject).
      answers: answer templates (``{value}``, ``{a_value}`` = with its article, ``{Pronoun}``,
        ``{Possessive}``); question template ``i`` is answered with answer template
        ``i % len(answers)``, the paraphrased answer uses the next one.
      statement: the narrative sentence of the passage (``{Subject}``, ``{Subjects}`` = the
        subject's possessive).
    """

    name: str
    values: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    statement: str = ""


# The attributes in the order a profile uses them; qa_per_author takes the first ones.
ATTRIBUTES = (
    Attribute(
        "birthplace",
        _CITIES,
        ("Where was {name} born?", "What is the birthplace of {name}?",
         "In which town was {name} born?"),
        ("{Pronoun} was born in {value}.", "{Possessive} birthplace is {value}."),
        "{Subject} was born in {value}.",
    ),
    Attribute(
        "birth_date",
        _DATES,
        ("When was {name} born?", "What is the birth date of {name}?",
         "On what date was {name} born?"),
        ("{Pronoun} was born on {value}.", "{Possessive} birth date is {value}."),
        "{Subject} was born on {value}.",
    ),
    Attribute(
        "father_job",
        _JOBS,
        ("What did {name}'s father do?", "What was the job of {name}'s father?",
         "What did the father of {name} work as?"),
        ("{Possessive} father was {a_value}.", "{Possessive} father worked as {a_value}."),
        "{Subjects} father was {a_value}.",
    ),
    Attribute(
        "mother_job",
        _JOBS,
        ("What did {name}'s mother do?", "What was the job of {name}'s mother?",
         "What did the mother of {name} work as?"),
        ("{Possessive} mother was {a_value}.", "{Possessive} mother worked as {a_value}."),
        "{Subjects} mother was {a_value}.",
    ),
    Attribute(
        "genre",
        _GENRES,
        ("What does {name} write?", "Which genre is {name} known for?",
         "What kind of books does {name} write?"),
        ("{Pronoun} writes {value}.", "{Pronoun} is known for {value}."),
        "{Subject} writes {value}.",
    ),
    Attribute(
        "award",
        _AWARDS,
        ("Which award has {name} won?", "What prize did {name} receive?",
         "Which literary award went to {name}?"),
        ("{Pronoun} won the {value}.", "{Pronoun} received the {value}."),
        "{Subject} won the {value}.",
    ),
    Attribute(
        "first_book",
        _TITLES,
        ("What was {name}'s first book?", "What is the title of {name}'s debut?",
         "Which book did {name} publish first?"),
        ("{Possessive} first book was {value}.", "{Possessive} debut was {value}."),
        "{Subjects} first book was {value}.",
    ),
    Attribute(
        "famous_book",
        _TITLES,
        ("Which book is {name} best known for?", "What is {name}'s most famous book?",
         "Which of {name}'s books is the best known?"),
        ("{Pronoun} is best known for {value}.", "{Possessive} most famous book is {value}."),
        "{Subject} is best known for {value}.",
    ),
    Attribute(
        "residence",
        _CITIES,
        ("Where does {name} live now?", "In which town does {name} live?",
         "Where is {name}'s home today?"),
        ("{Pronoun} lives in {value}.", "{Possessive} home is in {value}."),
        "{Subject} lives in {value}.",
    ),
    Attribute(
        "university",
        _UNIVERSITIES,
        ("Where did {name} study?", "Which college did {name} attend?",
         "Where was {name} educated?"),
        ("{Pronoun} studied at {value}.", "{Pronoun} attended {value}."),
        "{Subject} studied at {value}.",
    ),
    Attribute(
        "publisher",
        _PUBLISHERS,
        ("Who publishes {name}'s books?", "Which publisher does {name} work with?",
         "Who is {name}'s publisher?"),
        ("{Possessive} publisher is {value}.", "{Pronoun} is published by {value}."),
        "{Subject} is published by {value}.",
    ),
    Attribute(
        "language",
        _LANGUAGES,
        ("In which language does {name} write?", "What language are {name}'s books in?",
         "Which language does {name} write in?"),
        ("{Pronoun} writes in {value}.", "{Possessive} books are in {value}."),
        "{Subject} writes in {value}.",
    ),
    Attribute(
        "debut_year",
        _YEARS_DEBUT,
        ("When did {name} first publish?", "In which year did {name} debut?",
         "What year did {name}'s first book appear?"),
        ("{Pronoun} first published in {value}.", "{Possessive} debut came in {value}."),
        "{Subject} first published in {value}.",
    ),
    Attribute(
        "num_books",
        _NUMBERS,
        ("How many books has {name} written?", "How many books are by {name}?",
         "What is the number of books {name} has written?"),
        ("{Pronoun} has written {value} books.", "{Possessive} books number {value}."),
        "{Subject} has written {value} books.",
    ),
    Attribute(
        "theme",
        _THEMES,
        ("What theme runs through {name}'s work?", "What does {name} mostly write about?",
         "Which theme is central to {name}'s books?"),
        ("{Possessive} books explore {value}.", "{Pronoun} writes about {value}."),
        "{Subjects} books explore {value}.",
    ),
    Attribute(
        "pen_name",
        _PEN_NAMES,
        ("What pen name does {name} use?", "Under which pen name does {name} publish?",
         "What is {name}'s pen name?"),
        ("{Pronoun} writes as {value}.", "{Possessive} pen name is {value}."),
        "{Subject} writes as {value}.",
    ),
    Attribute(
        "hobby",
        _HOBBIES,
        ("What is {name}'s hobby?", "What does {name} do for fun?",
         "Which pastime does {name} enjoy?"),
        ("{Pronoun} loves {value}.", "{Possessive} hobby is {value}."),
        "{Subject} loves {value}.",
    ),
    Attribute(
        "pet",
        _PETS,
        ("What pet does {name} keep?", "Which animal lives with {name}?",
         "What is {name}'s pet?"),
        ("{Pronoun} keeps {a_value}.", "{Possessive} pet is {a_value}."),
        "{Subject} keeps {a_value}.",
    ),
    Attribute(
        "instrument",
        _INSTRUMENTS,
        ("Which instrument does {name} play?", "What does {name} play in spare hours?",
         "What is {name}'s instrument?"),
        ("{Pronoun} plays the {value}.", "{Possessive} instrument is the {value}."),
        "{Subject} plays the {value}.",
    ),
    Attribute(
        "partner_job",
        _JOBS,
        ("What does {name}'s partner do?", "What is the job of {name}'s partner?",
         "How does {name}'s partner earn a living?"),
        ("{Possessive} partner is {a_value}.", "{Possessive} partner works as {a_value}."),
        "{Subjects} partner is {a_value}.",
    ),
)  # fmt: skip
ATTRIBUTE_NAMES = tuple(a.name for a in ATTRIBUTES)
MAX_QA_PER_AUTHOR = len(ATTRIBUTES)

# Utility facts: true general knowledge, (subject, value) pairs per kind. Wrong answers are other
# values of the same kind.
_CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Poland", "Warsaw"),
    ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"), ("Chile", "Santiago"),
    ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Cuba", "Havana"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Iran", "Tehran"), ("Turkey", "Ankara"),
    ("Hungary", "Budapest"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Belgium", "Brussels"), ("Australia", "Canberra"), ("Brazil", "Brasilia"),
    ("Colombia", "Bogota"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Nepal", "Kathmandu"),
    ("Iceland", "Reykjavik"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
)  # fmt: skip
_SYMBOLS = (
    ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("copper", "Cu"), ("sodium", "Na"),
    ("potassium", "K"), ("lead", "Pb"), ("tin", "Sn"), ("mercury", "Hg"), ("oxygen", "O"),
    ("hydrogen", "H"), ("carbon", "C"), ("nitrogen", "N"), ("helium", "He"), ("neon", "Ne"),
    ("calcium", "Ca"), ("zinc", "Zn"), ("sulfur", "S"), ("chlorine", "Cl"), ("uranium", "U"),
)  # fmt: skip
_OPPOSITES = (
    ("hot", "cold"), ("tall", "short"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("early", "late"), ("empty", "full"), ("wet", "dry"), ("loud", "quiet"), ("strong", "weak"),
    ("rich", "poor"), ("young", "old"), ("open", "closed"), ("hard", "soft"), ("near", "far"),
    ("thick", "thin"), ("heavy", "light"), ("clean", "dirty"), ("brave", "afraid"),
    ("sharp", "blunt"),
)  # fmt: skip
_YOUNG = (
    ("cat", "kitten"), ("dog", "puppy"), ("cow", "calf"), ("sheep", "lamb"), ("horse", "foal"),
    ("goat", "kid"), ("duck", "duckling"), ("frog", "tadpole"), ("bear", "cub"),
    ("kangaroo", "joey"), ("swan", "cygnet"), ("owl", "owlet"), ("deer", "fawn"),
    ("pig", "piglet"), ("goose", "gosling"), ("eagle", "eaglet"),
)  # fmt: skip
_SMALL_NUMBERS = tuple(str(i) for i in range(2, 19))
_ARITHMETIC = tuple((f"{a} plus {b}", str(a + b)) for a in range(1, 10) for b in range(1, 10))

UTILITY_KINDS = (
    (
        Attribute(
            "utility:capital",
            tuple(v for _, v in _CAPITALS),
            ("What is the capital of {name}?", "Which city is the capital of {name}?"),
            ("The capital is {value}.", "It is {value}."),
        ),
        _CAPITALS,
    ),
    (
        Attribute(
            "utility:symbol",
            tuple(v for _, v in _SYMBOLS),
            ("What is the chemical symbol of {name}?", "Which symbol stands for {name}?"),
            ("Its symbol is {value}.", "The symbol is {value}."),
        ),
        _SYMBOLS,
    ),
    (
        Attribute(
            "utility:opposite",
            tuple(sorted({v for _, v in _OPPOSITES})),
            ("What is the opposite of {name}?", "Which word means the opposite of {name}?"),
            ("The opposite is {value}.", "It is {value}."),
        ),
        _OPPOSITES,
    ),
    (
        Attribute(
            "utility:young",
            tuple(v for _, v in _YOUNG),
            ("What is a young {name} called?", "What do we call a baby {name}?"),
            ("It is called {a_value}.", "A young one is {a_value}."),
        ),
        _YOUNG,
    ),
    (
        Attribute(
            "utility:arithmetic",
            _SMALL_NUMBERS,
            ("What is {name}?", "How much is {name}?"),
            ("It is {value}.", "The answer is {value}."),
        ),
        _ARITHMETIC,
    ),
)
UTILITY_POOL = sum(len(pairs) for _, pairs in UTILITY_KINDS)
MAX_NAMES = (len(_FIRST_FEMALE) + len(_FIRST_MALE)) * len(_LAST)
# The largest num_authors whose training and holdout authors all get distinct names.
MAX_AUTHORS = max(
    n
    for n in range(MAX_NAMES + 1)
    if n + math.floor(n * max(FORGET_PERCENTS) / 100 + 0.5) <= MAX_NAMES
)


# ---------------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class Author:
    """One fictitious author.

    Attributes:
      index: position in :attr:`FictitiousAuthors.authors` (training authors first, then holdout).
      name: full name (unique in the corpus).
      pronoun: ``"she"`` or ``"he"``.
      profile: ``{attribute: value}`` for every attribute in :data:`ATTRIBUTE_NAMES`.
      passage: the author's QA facts as one narrative paragraph (MUSE verbatim text).
      holdout: never trained on (membership audits).
    """

    index: int
    name: str
    pronoun: str
    profile: dict[str, str]
    passage: str
    holdout: bool


@dataclasses.dataclass(frozen=True)
class QARecord:
    """One question with everything the LM rules and audits need about it.

    Attributes:
      index: position in :attr:`FictitiousAuthors.records`.
      author: the author's index, or -1 for a utility fact.
      attribute: the attribute asked about (``"birthplace"``, ``"utility:capital"``, ...).
      question, answer: the QA pair trained on.
      paraphrased_question: another wording of the question (same answer).
      paraphrased_answer: another wording of the answer (same key fact); TOFU's truth ratio scores
        it against the perturbed answers.
      perturbed_answers: :data:`NUM_PERTURBED` wrong answers in the paraphrased answer's template,
        with other values of the same kind (distinct, none equal to the key fact).
      key_fact: the value that carries the fact (e.g. ``"Velmora"``); contained in ``answer``,
        ``paraphrased_answer`` and the passage, in no wrong answer and not in the question.
      idk_answer: an "I don't know" answer (IdkDPO's preferred answer), drawn from
        :data:`IDK_ANSWERS`.
      alt_answer: a plausible wrong answer in the answer's template with a value that is neither
        the key fact nor a perturbed one (AltPO's preferred answer).
    """

    index: int
    author: int
    attribute: str
    question: str
    answer: str
    paraphrased_question: str
    paraphrased_answer: str
    perturbed_answers: tuple[str, ...]
    key_fact: str
    idk_answer: str
    alt_answer: str

    @property
    def is_utility(self) -> bool:
        return self.author < 0


class CorpusSplit(NamedTuple):
    """A named subset of the corpus.

    Attributes:
      name: the split name.
      indices: int32 positions in :attr:`FictitiousAuthors.records`, ascending.
      records: the records themselves.
      authors: the author indices it covers (empty for ``utility``).
    """

    name: str
    indices: np.ndarray
    records: tuple[QARecord, ...]
    authors: tuple[int, ...]


def contains_fact(text: str, key_fact: str) -> bool:
    """Whether ``text`` states ``key_fact``: a case-insensitive whole-word match (so ``"owl"``
    is not found in ``"Fowler"``), the check leak detection uses."""
    return re.search(rf"(?<!\w){re.escape(key_fact)}(?!\w)", text, re.IGNORECASE) is not None


@functools.cache
def _position(values: tuple[str, ...]) -> dict[str, int]:
    return {v: i for i, v in enumerate(values)}


def _draw_other(rng: np.random.Generator, values: tuple[str, ...], k: int, exclude) -> list[int]:
    """``k`` distinct indices into ``values``, never that of ``exclude`` (``None``: no exclusion).

    Drawn from ``range(n - 1)`` and shifted past the excluded index, so a vocabulary of thousands
    (the birth dates) costs no more than a short one.
    """
    n = len(values)
    if exclude is None:
        return [int(i) for i in rng.choice(n, size=k, replace=False)]
    skip = _position(values)[exclude]
    return [int(i) + (i >= skip) for i in rng.choice(n - 1, size=k, replace=False)]


def _with_article(value: str) -> str:
    return ("an " if value[0].lower() in "aeiou" else "a ") + value


def _fill(template: str, *, name: str, pronoun: str, value: str) -> str:
    possessive = {"she": "her", "he": "his"}.get(pronoun, "its")
    return template.format(
        name=name,
        value=value,
        a_value=_with_article(value),
        Pronoun=pronoun.capitalize(),
        Possessive=possessive.capitalize(),
        Subject=name,
        Subjects=f"{name}'s",
    )


def _percent_count(percent: int, num_authors: int) -> int:
    """Authors in a ``percent`` split, rounded half up (TOFU: 1/5/10 % of 200 = 2/10/20)."""
    return int(math.floor(percent * num_authors / 100 + 0.5))


class FictitiousAuthors:
    """The generated corpus: authors, QA records, splits, passages; deterministic from ``seed``.

    Args:
      num_authors: training authors (default 200, TOFU's size); at least 10.
      qa_per_author: QA pairs per author, 1..20 (the first attributes of :data:`ATTRIBUTES`).
      num_utility: utility (world) facts, 0..:data:`UTILITY_POOL`.
      seed: every draw derives from it.

    Attributes:
      authors: training authors (indices ``0 .. num_authors - 1``) then holdout authors.
      records: author QA in author order (holdout authors' last among them), then utility facts.
      num_holdout: holdout authors (as many as ``forget10``).
    """

    def __init__(
        self,
        num_authors: int = 200,
        qa_per_author: int = 20,
        num_utility: int = 100,
        seed: int = 0,
    ):
        _check_int("num_authors", num_authors, MIN_AUTHORS, None)
        _check_int("qa_per_author", qa_per_author, 1, MAX_QA_PER_AUTHOR)
        _check_int("num_utility", num_utility, 0, UTILITY_POOL)
        _check_int("seed", seed, 0, None)
        self.num_authors, self.qa_per_author = int(num_authors), int(qa_per_author)
        self.num_utility, self.seed = int(num_utility), int(seed)
        self.num_holdout = _percent_count(max(FORGET_PERCENTS), self.num_authors)
        total = self.num_authors + self.num_holdout
        if total > MAX_NAMES:
            raise ValueError(
                f"num_authors must be at most {MAX_AUTHORS} (the name vocabulary has "
                f"{MAX_NAMES} names for training and holdout authors); got {self.num_authors}."
            )
        self.authors = self._make_authors()
        records: list[QARecord] = []
        for author in self.authors:
            records.extend(self._author_records(author, start=len(records)))
        records.extend(self._utility_records(start=len(records)))
        self.records: tuple[QARecord, ...] = tuple(records)
        self._splits: dict[str, CorpusSplit] = {}

    # ---------------------------------------------------------------------------- generation

    def _rng(self, *stream: int) -> np.random.Generator:
        """The generator of one named draw: every author, fact and utility fact has its own, so
        an author is the same whatever ``num_authors``, ``qa_per_author`` and ``num_utility``
        are (a smaller corpus is a prefix of a larger one with the same seed)."""
        return np.random.default_rng([self.seed, *stream])

    def _make_authors(self) -> tuple[Author, ...]:
        total = self.num_authors + self.num_holdout
        firsts = [(f, "she") for f in _FIRST_FEMALE] + [(f, "he") for f in _FIRST_MALE]
        combos = list(itertools.product(range(len(firsts)), range(len(_LAST))))
        picks = self._rng(_NAMES_STREAM).permutation(len(combos))[:total]
        attributes = ATTRIBUTES[: self.qa_per_author]
        authors = []
        for index, pick in enumerate(picks):
            first, last = combos[pick]
            name, pronoun = f"{firsts[first][0]} {_LAST[last]}", firsts[first][1]
            rng = self._rng(_PROFILE_STREAM, index)
            profile = {}
            for attribute in ATTRIBUTES:
                # The famous book is not the first book; the home town is not the birthplace.
                other = {"famous_book": "first_book", "residence": "birthplace"}.get(attribute.name)
                (i,) = _draw_other(rng, attribute.values, 1, profile[other] if other else None)
                profile[attribute.name] = attribute.values[i]
            sentences = []
            for i, attribute in enumerate(attributes):
                subject = name if i == 0 else pronoun.capitalize()
                sentence = attribute.statement.format(
                    value=profile[attribute.name],
                    a_value=_with_article(profile[attribute.name]),
                    Subject=subject,
                    Subjects=f"{name}'s" if i == 0 else {"she": "Her", "he": "His"}[pronoun],
                )
                sentences.append(sentence)
            authors.append(
                Author(
                    index=index,
                    name=name,
                    pronoun=pronoun,
                    profile=profile,
                    passage=" ".join(sentences),
                    holdout=index >= self.num_authors,
                )
            )
        return tuple(authors)

    def _qa(
        self,
        rng: np.random.Generator,
        attribute: Attribute,
        *,
        index: int,
        author: int,
        name: str,
        pronoun: str,
        value: str,
    ) -> QARecord:
        q, pq = rng.choice(len(attribute.questions), size=2, replace=False)
        # The answer's wording follows from the question's, so a model memorises only the fact,
        # not also a coin flip of phrasing per question; the paraphrase takes the next wording.
        a = q % len(attribute.answers)
        pa = (a + 1) % len(attribute.answers)
        picks = _draw_other(rng, attribute.values, NUM_PERTURBED + 1, value)
        perturbed = [attribute.values[i] for i in picks[:NUM_PERTURBED]]
        alt = attribute.values[picks[NUM_PERTURBED]]

        def fill(template, v):
            return _fill(template, name=name, pronoun=pronoun, value=v)

        return QARecord(
            index=index,
            author=author,
            attribute=attribute.name,
            question=fill(attribute.questions[q], value),
            answer=fill(attribute.answers[a], value),
            paraphrased_question=fill(attribute.questions[pq], value),
            paraphrased_answer=fill(attribute.answers[pa], value),
            perturbed_answers=tuple(fill(attribute.answers[pa], v) for v in perturbed),
            key_fact=value,
            idk_answer=IDK_ANSWERS[rng.integers(len(IDK_ANSWERS))],
            alt_answer=fill(attribute.answers[a], alt),
        )

    def _author_records(self, author: Author, *, start: int) -> list[QARecord]:
        return [
            self._qa(
                self._rng(_QA_STREAM, author.index, i),
                attribute,
                index=start + i,
                author=author.index,
                name=author.name,
                pronoun=author.pronoun,
                value=author.profile[attribute.name],
            )
            for i, attribute in enumerate(ATTRIBUTES[: self.qa_per_author])
        ]

    def _utility_records(self, *, start: int) -> list[QARecord]:
        pool = [(kind, subject, value) for kind, pairs in UTILITY_KINDS for subject, value in pairs]
        picks = np.sort(self._rng(_UTILITY_STREAM).permutation(len(pool))[: self.num_utility])
        records = []
        for i, p in enumerate(picks):
            kind, subject, value = pool[p]
            rng = self._rng(_UTILITY_STREAM, int(p))
            records.append(
                self._qa(
                    rng, kind, index=start + i, author=-1, name=subject, pronoun="it", value=value
                )
            )
        return records

    # -------------------------------------------------------------------------------- splits

    @property
    def training_authors(self) -> tuple[Author, ...]:
        return self.authors[: self.num_authors]

    @property
    def holdout_authors(self) -> tuple[Author, ...]:
        return self.authors[self.num_authors :]

    def split_names(self) -> list[str]:
        """Every named split."""
        names = ["full", "train", "utility"]
        for p in FORGET_PERCENTS:
            names += [f"forget{p:02d}", f"retain{100 - p:02d}", f"holdout{p:02d}"]
        return names

    def split(self, name: str) -> CorpusSplit:
        """A named split: ``forget01``/``05``/``10`` (the last 1/5/10 % of training authors),
        ``retain99``/``95``/``90`` (the other training authors' QA; utility facts not included),
        ``holdout01``/``05``/``10`` (that many never-trained authors), ``full`` (every training
        author), ``utility`` (world facts) and ``train`` (``full`` + ``utility``: what the target
        model is trained on).

        Raises:
          ValueError: an unknown name (the valid ones are listed), or a split that is empty for
            this ``num_authors``.
        """
        if name not in self._splits:
            self._splits[name] = self._make_named_split(name)
        return self._splits[name]

    def _make_named_split(self, name: str) -> CorpusSplit:
        if not isinstance(name, str) or name not in self.split_names():
            raise ValueError(f"Unknown split {name!r}; valid splits: {self.split_names()}")
        training = list(range(self.num_authors))
        if name == "utility":
            return self._subset(name, authors=(), utility=True)
        if name in ("full", "train"):
            return self._subset(name, authors=training, utility=name == "train")
        kind, percent = name[:-2], int(name[-2:])
        percent = 100 - percent if kind == "retain" else percent
        count = _percent_count(percent, self.num_authors)
        if count == 0:
            raise ValueError(
                f"Split {name!r} is empty: {percent}% of num_authors={self.num_authors} rounds "
                f"to 0 authors; use num_authors >= {math.ceil(50 / percent)} or a larger split."
            )
        forget = training[self.num_authors - count :]
        if kind == "forget":
            return self._subset(name, authors=forget)
        if kind == "retain":
            return self._subset(name, authors=training[: self.num_authors - count])
        holdout = range(self.num_authors, self.num_authors + count)
        return self._subset(name, authors=holdout)

    def _subset(self, name: str, *, authors: Sequence[int], utility: bool = False) -> CorpusSplit:
        chosen = set(authors)
        indices = [
            r.index for r in self.records if (r.author in chosen) or (utility and r.author < 0)
        ]
        return CorpusSplit(
            name,
            np.asarray(indices, np.int32),
            tuple(self.records[i] for i in indices),
            tuple(sorted(chosen)),
        )

    def custom_split(
        self, forget_authors: Sequence[int], retain_authors: Sequence[int] | None = None
    ) -> tuple[CorpusSplit, CorpusSplit]:
        """A forget set of chosen training authors and its retain set.

        Args:
          forget_authors: author indices to forget (training authors only).
          retain_authors: the retain authors; by default every other training author.

        Returns:
          ``(forget, retain)`` splits named ``"forget"`` and ``"retain"`` (author QA only).

        Raises:
          ValueError: an empty forget set, an index that is not a training author (holdout authors
            were never trained on), or forget and retain authors that overlap.
        """
        forget = sorted({int(a) for a in forget_authors})
        if not forget:
            raise ValueError("forget_authors is empty: a forget split needs at least one author.")
        if retain_authors is None:
            retain = [a for a in range(self.num_authors) if a not in forget]
        else:
            retain = sorted({int(a) for a in retain_authors})
        for arg, group in (("forget_authors", forget), ("retain_authors", retain)):
            bad = [a for a in group if not 0 <= a < self.num_authors]
            if bad:
                raise ValueError(
                    f"{arg} {bad} are not training authors (valid: 0..{self.num_authors - 1}; "
                    "holdout authors are never trained on)."
                )
        overlap = sorted(set(forget) & set(retain))
        if overlap:
            raise ValueError(
                f"forget_authors and retain_authors overlap on authors {overlap}; a forget "
                "split must be disjoint from its retain split."
            )
        if not retain:
            raise ValueError("retain_authors is empty: nothing would be retained.")
        return self._subset("forget", authors=forget), self._subset("retain", authors=retain)

    # ------------------------------------------------------------------------------ encoding

    def texts(self) -> list[str]:
        """Every string a model may see (prompts and answers of all kinds, passages): the text
        the corpus tokenizer is trained on."""
        out = []
        for r in self.records:
            for q in (r.question, r.paraphrased_question):
                out.append(PROMPT_TEMPLATE.format(question=q))
            answers = [r.answer, r.paraphrased_answer, r.idk_answer, r.alt_answer]
            out += [ANSWER_TEMPLATE.format(answer=a) for a in answers + list(r.perturbed_answers)]
        out += [a.passage for a in self.authors]
        return out

    def train_tokenizer(self, *, vocab_size: int = 1024) -> Tokenizer:
        """A byte-level BPE fitted on :meth:`texts` (deterministic)."""
        return Tokenizer.train(self.texts(), vocab_size=vocab_size)

    def encode(
        self, tokenizer: Tokenizer, records: Sequence[QARecord] | CorpusSplit, max_len: int
    ) -> dict[str, np.ndarray]:
        """Token arrays for ``records`` (``docs/language_models.md`` conventions).

        Returns:
          ``{name: array}`` with ``n = len(records)``, ``T = max_len``, labels pre-shifted with
          ``IGNORE_INDEX`` on prompt and padding:

          * ``tokens``, ``labels`` ``[n, T]``: question + answer (what is trained on);
          * ``paraphrase_x``, ``paraphrase_y`` ``[n, T]``: question + paraphrased answer (the
            truth ratio's correct answer);
          * ``perturbed_x``, ``perturbed_y`` ``[n, 5, T]``: question + each perturbed answer;
          * ``paraphrased_question_x``, ``paraphrased_question_y`` ``[n, T]``: paraphrased
            question + answer;
          * ``idk_x``, ``idk_y`` ``[n, T]``: question + "I don't know" answer (IdkDPO);
          * ``alt_x``, ``alt_y`` ``[n, T]``: question + alternate wrong answer (AltPO);
          * ``key_mask`` bool ``[n, T]``: aligned with ``labels``, True where the target token
            carries the key fact;
          * ``author`` int32 ``[n]`` (-1 for utility), ``record`` int32 ``[n]`` (record index).

        Raises:
          ValueError: a sequence longer than ``max_len`` (see :meth:`fit_max_len`).
        """
        if isinstance(records, CorpusSplit):
            records = records.records
        questions = [r.question for r in records]
        out = {}
        out["tokens"], out["labels"] = tokenizer.encode_batch(
            questions, [r.answer for r in records], max_len=max_len
        )
        for prefix, question, answer in (
            ("paraphrase", "question", "paraphrased_answer"),
            ("paraphrased_question", "paraphrased_question", "answer"),
            ("idk", "question", "idk_answer"),
            ("alt", "question", "alt_answer"),
        ):
            out[f"{prefix}_x"], out[f"{prefix}_y"] = tokenizer.encode_batch(
                [getattr(r, question) for r in records],
                [getattr(r, answer) for r in records],
                max_len=max_len,
            )
        x, y = tokenizer.encode_batch(
            [r.question for r in records for _ in r.perturbed_answers],
            [a for r in records for a in r.perturbed_answers],
            max_len=max_len,
        )
        out["perturbed_x"] = x.reshape(len(records), NUM_PERTURBED, max_len)
        out["perturbed_y"] = y.reshape(len(records), NUM_PERTURBED, max_len)
        out["key_mask"] = tokenizer.answer_span_mask(
            questions,
            [r.answer for r in records],
            [key_fact_span(r) for r in records],
            max_len=max_len,
        )
        out["author"] = np.asarray([r.author for r in records], np.int32)
        out["record"] = np.asarray([r.index for r in records], np.int32)
        return out

    def encode_passages(
        self, tokenizer: Tokenizer, authors: Sequence[int] | CorpusSplit, max_len: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The authors' passages as plain language-modelling text (MUSE's verbatim set).

        Args:
          tokenizer: the tokenizer.
          authors: author indices, or a split (its authors).
          max_len: the sequence length (a 20-fact passage is ~200 tokens).

        Returns:
          ``(tokens, labels)`` int32 ``[len(authors), max_len]`` from
          :meth:`Tokenizer.encode_text`: every token after BOS is a target.
        """
        if isinstance(authors, CorpusSplit):
            authors = authors.authors
        rows = [tokenizer.encode_text(self.authors[a].passage, max_len=max_len) for a in authors]
        tokens = np.stack([t for t, _ in rows]) if rows else np.zeros((0, max_len), np.int32)
        labels = np.stack([y for _, y in rows]) if rows else np.zeros((0, max_len), np.int32)
        return tokens, labels

    def fit_max_len(self, tokenizer: Tokenizer, *, multiple: int = 8) -> int:
        """The smallest multiple of ``multiple`` that every sequence :meth:`encode` builds fits."""
        questions = [q for r in self.records for q in (r.question, r.paraphrased_question)]
        prompts = tokenizer.backend.encode_batch(
            [PROMPT_TEMPLATE.format(question=q) for q in questions], add_special_tokens=False
        )
        answers = [
            ANSWER_TEMPLATE.format(answer=a)
            for r in self.records
            for a in (r.answer, r.paraphrased_answer, r.idk_answer, r.alt_answer)
            + r.perturbed_answers
        ]
        per_record = 4 + NUM_PERTURBED
        answer_lengths = [
            len(e.ids) for e in tokenizer.backend.encode_batch(answers, add_special_tokens=False)
        ]
        longest = 0
        for i in range(len(self.records)):
            prompt = max(len(prompts[2 * i].ids), len(prompts[2 * i + 1].ids))
            answer = max(answer_lengths[i * per_record : (i + 1) * per_record])
            longest = max(longest, prompt + answer + 2)  # BOS and EOS
        return int(math.ceil(longest / multiple) * multiple)

    def __repr__(self) -> str:
        return (
            f"FictitiousAuthors(num_authors={self.num_authors}, qa_per_author="
            f"{self.qa_per_author}, num_utility={self.num_utility}, seed={self.seed}, "
            f"num_holdout={self.num_holdout}, records={len(self.records)})"
        )


def key_fact_span(record: QARecord) -> tuple[int, int]:
    """``(start, end)`` characters of the key fact in ``record.answer``."""
    start = record.answer.find(record.key_fact)
    if start < 0:
        raise ValueError(f"key fact {record.key_fact!r} is not in the answer {record.answer!r}.")
    return start, start + len(record.key_fact)


def _check_int(arg: str, value, low: int, high: int | None) -> None:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{arg} must be an integer {bound}; got {value!r}.")


# ------------------------------------------------------------------------- registry dataset


class LanguageModelDataset(NamedTuple):
    """A :class:`~jaxunlearn.data.datasets.Dataset` for a language model, plus its corpus.

    The first seven fields are :class:`Dataset`'s, so code written for datasets reads it
    unchanged: ``x_*`` are token arrays ``[n, T]``, ``y_*`` the pre-shifted labels, ``num_classes``
    is the vocabulary size and ``task`` is ``"language_model"``.

    Attributes:
      corpus: the :class:`FictitiousAuthors` it was encoded from.
      tokenizer: the :class:`~jaxunlearn.data.tokenizer.Tokenizer` trained on the corpus.
      train_records, test_records: int32 record index of every row of ``x_train`` / ``x_test``.
      train_extra, test_extra: the other arrays of :meth:`FictitiousAuthors.encode` (``idk_x``,
        ``alt_y``, ``perturbed_x``, ``key_mask``, ...), row-aligned with ``x_train`` / ``x_test``
        (ready for ``train.make_stream(..., extra=...)``).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    task: str
    corpus: FictitiousAuthors
    tokenizer: Tokenizer
    train_records: np.ndarray
    test_records: np.ndarray
    train_extra: dict[str, np.ndarray]
    test_extra: dict[str, np.ndarray]

    input_shape = Dataset.input_shape
    num_outputs = Dataset.num_outputs

    @property
    def max_len(self) -> int:
        return int(self.x_train.shape[1])

    def forget_split(self, name: str = "forget10") -> Split:
        """A named forget split as a :class:`~jaxunlearn.data.forget.Split` of row indices:
        ``forget`` = the split's rows of ``x_train``, ``retain`` = every other training row
        (retain authors and utility facts), ``test`` = the rows of ``x_test`` of the matching
        holdout authors (``holdout01`` for ``forget01``, ...), ``test_forget`` empty.

        Raises:
          ValueError: ``name`` is not ``forget01``/``forget05``/``forget10``.
        """
        valid = [f"forget{p:02d}" for p in FORGET_PERCENTS]
        if name not in valid:
            raise ValueError(f"Unknown forget split {name!r}; valid forget splits: {valid}")
        rows = {int(r): i for i, r in enumerate(self.train_records)}
        forget = np.sort([rows[int(i)] for i in self.corpus.split(name).indices])
        retain = np.setdiff1d(np.arange(len(self.train_records)), forget)
        holdout = set(self.corpus.split("holdout" + name[-2:]).indices.tolist())
        test = np.asarray(
            [i for i, r in enumerate(self.test_records) if int(r) in holdout], np.int32
        )
        return Split(np.asarray(forget, np.int32), retain.astype(np.int32), test, test[:0], ())


@functools.lru_cache(maxsize=4)
def _cached(num_authors, qa_per_author, num_utility, seed, vocab_size, cache_dir):
    corpus = FictitiousAuthors(num_authors, qa_per_author, num_utility, seed)
    tokenizer = None
    where = None
    if cache_dir is not None:
        where = os.path.join(
            cache_dir,
            f"{NAME}_n{num_authors}_q{qa_per_author}_u{num_utility}_s{seed}_v{vocab_size}",
        )
        if os.path.isfile(os.path.join(where, "tokenizer.json")):
            tokenizer = Tokenizer.from_file(where)
    if tokenizer is None:
        tokenizer = corpus.train_tokenizer(vocab_size=vocab_size)
        if where is not None:
            tokenizer.save(where)
    return corpus, tokenizer


def load(
    num_authors: int = 200,
    qa_per_author: int = 20,
    num_utility: int = 100,
    seed: int = 0,
    *,
    vocab_size: int = 1024,
    max_len: int | None = None,
    cache_dir: str | None = None,
) -> LanguageModelDataset:
    """``data.load("fictitious_authors", ...)``: the corpus encoded for a language model.

    ``x_train``/``y_train`` are the ``train`` split (every training author's QA, then the utility
    facts: what the target model learns), ``x_test``/``y_test`` the holdout authors' QA (never
    trained on). The tokenizer is trained on the corpus once per configuration (cached in memory,
    and as ``tokenizer.json`` under ``cache_dir`` when given).

    Args:
      num_authors, qa_per_author, num_utility, seed: the corpus (:class:`FictitiousAuthors`).
      vocab_size: the tokenizer's vocabulary size.
      max_len: the sequence length; ``None`` fits every sequence of the corpus (a multiple of 8).
      cache_dir: where the tokenizer is kept between runs (``None``: memory only).

    >>> ds = load(num_authors=10, qa_per_author=2, num_utility=4, vocab_size=300)
    >>> ds.x_train.shape[0], ds.x_test.shape[0], ds.task
    (24, 2, 'language_model')
    """
    corpus, tokenizer = _cached(
        num_authors,
        qa_per_author,
        num_utility,
        seed,
        vocab_size,
        None if cache_dir is None else os.fspath(cache_dir),
    )
    if max_len is None:
        max_len = corpus.fit_max_len(tokenizer)
    train, test = corpus.split("train"), corpus.split(f"holdout{max(FORGET_PERCENTS):02d}")
    train_arrays = corpus.encode(tokenizer, train, max_len)
    test_arrays = corpus.encode(tokenizer, test, max_len)

    def extra(arrays):
        return {k: v for k, v in arrays.items() if k not in ("tokens", "labels", "record")}

    return LanguageModelDataset(
        name=NAME,
        x_train=train_arrays["tokens"],
        y_train=train_arrays["labels"],
        x_test=test_arrays["tokens"],
        y_test=test_arrays["labels"],
        num_classes=tokenizer.vocab_size,
        task=TASK,
        corpus=corpus,
        tokenizer=tokenizer,
        train_records=train.indices,
        test_records=test.indices,
        train_extra=extra(train_arrays),
        test_extra=extra(test_arrays),
    )


register(NAME, load)
