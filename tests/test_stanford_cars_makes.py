"""Tests for carjax.data.stanford_cars.makes: Stanford class names -> makes."""

from __future__ import annotations

import pytest

from carjax.data.stanford_cars import makes


@pytest.mark.parametrize("model,make", [
    ("Audi S4 Sedan 2012", "Audi"),
    ("AM General Hummer SUV 2000", "AM General"),
    ("Aston Martin V8 Vantage Coupe 2012", "Aston Martin"),
    ("Land Rover LR2 SUV 2012", "Land Rover"),
    ("Mercedes-Benz Sprinter Van 2012", "Mercedes-Benz"),
    ("aston martin virage coupe 2012", "Aston Martin"),
    ("mercedes-benz c-class sedan 2012", "Mercedes-Benz"),
    ("bmw m3 coupe 2012", "BMW"),
    ("0007_Aston_Martin_V8_Vantage_Coupe_2012", "Aston Martin"),
    ("smart fortwo Convertible 2012", "smart"),
    ("Zoomobile X 2030", "Zoomobile"),
])
def test_make_of(model, make):
  assert makes.make_of(model) == make


def test_make_folder_name():
  assert makes.make_folder_name("Aston Martin") == "Aston_Martin"
  assert makes.make_folder_name("Mercedes-Benz") == "Mercedes-Benz"
