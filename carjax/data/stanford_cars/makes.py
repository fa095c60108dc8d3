"""Stanford Cars class names and the car makes they belong to.

A make is the first word of the Stanford class name ("Audi S4 Sedan 2012" -> Audi), except the
two-word makes AM General, Aston Martin and Land Rover.
"""

from __future__ import annotations

import re

TWO_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
# How Stanford Cars spells its 49 makes, to restore the spelling from mirrors
# that lower-cased the class names ("aston martin v8 vantage coupe 2012").
STANFORD_MAKES = (
    "AM General", "Acura", "Aston Martin", "Audi", "BMW", "Bentley", "Bugatti",
    "Buick", "Cadillac", "Chevrolet", "Chrysler", "Daewoo", "Dodge", "Eagle",
    "FIAT", "Ferrari", "Fisker", "Ford", "GMC", "Geo", "HUMMER", "Honda",
    "Hyundai", "Infiniti", "Isuzu", "Jaguar", "Jeep", "Lamborghini",
    "Land Rover", "Lincoln", "MINI", "Maybach", "Mazda", "McLaren",
    "Mercedes-Benz", "Mitsubishi", "Nissan", "Plymouth", "Porsche", "Ram",
    "Rolls-Royce", "Scion", "Spyker", "Suzuki", "Tesla", "Toyota",
    "Volkswagen", "Volvo", "smart",
)
_MAKE_SPELLING = {make.lower(): make for make in STANFORD_MAKES}


def clean_class_name(name: str) -> str:
  """Normalises class names some mirrors mangle: '0001_AM_General_...' etc."""
  name = name.strip().replace("_", " ")
  name = re.sub(r"^\d+\s+(?=\D)", "", name)  # "0001 AM General ..." prefixes.
  return re.sub(r"\s+", " ", name)


def make_of(model: str) -> str:
  """The make of a Stanford class name: 'Aston Martin V8 ...' -> 'Aston Martin'.

  The first word, except for the two-word makes; spelled as Stanford spells
  it whatever the case of the input.
  """
  model = clean_class_name(model)
  lowered = model.lower()
  for make in TWO_WORD_MAKES:
    if lowered == make.lower() or lowered.startswith(make.lower() + " "):
      return make
  first_word = model.split(" ", 1)[0]
  return _MAKE_SPELLING.get(first_word.lower(), first_word)


def make_folder_name(make: str) -> str:
  """Folder name of a make: spaces become '_' ('Aston Martin' -> 'Aston_Martin')."""
  return make.replace(" ", "_").replace("/", "-")
