"""The study's headline: seeds aggregated, intervals, the paired test and the conclusions."""

from carjax.study import headline


def test_headline_aggregates_seeds_and_writes_conclusions(tmp_path):
  runs = {"cnn": [{"accuracy": 0.70, "count": 779}, {"accuracy": 0.74, "count": 779}],
          "lite0": [{"accuracy": 0.86, "count": 779, "accuracy_ci95": [0.83, 0.88]}]}
  summary = headline.over_seeds(runs["cnn"], "accuracy")
  assert (round(summary.mean, 6), summary.low, summary.high, summary.seeds) == (0.72, 0.70,
                                                                               0.74, 2)
  assert str(summary) == "0.720 (0.700–0.740, 2 seeds)"
  assert headline.with_interval(runs["lite0"][0], "accuracy") == "0.860 [0.830, 0.880]"
  lo, hi = headline.interval_of(runs["cnn"][0], "accuracy")  # Wilson from the count.
  assert lo < 0.70 < hi and hi - lo < 0.07
  for name, right in (("a", [1] * 60 + [0] * 40), ("b", [1] * 40 + [0] * 60)):
    (tmp_path / name).mkdir()
    with open(tmp_path / name / "predictions.csv", "w") as f:
      f.write("file,true,predicted,confidence,correct\n")
      f.writelines(f"img{i}.jpg,A,A,0.9,{c}\n" for i, c in enumerate(right))
  n, p = headline.paired_test(str(tmp_path / "a"), str(tmp_path / "b"))
  assert n == 100 and p < 1e-4
  text = headline.conclusions(
      runs, test_split="val", chosen_on="dev", paired=("lite0", "cnn", (n, p)),
      references={"Keras CNN": {"metric": "accuracy", "value": 0.53}},
      minutes={"cnn": 50.0, "lite0": None})
  assert text[0].startswith("**lite0** classifies 86.0%")
  assert "lite0 leads cnn by 14.0 accuracy points" in text[2]
  assert "clear" in text[2]
  assert any("Keras CNN" in line and "0.53" in line for line in text)
  assert any("chosen on the dev split" in line for line in text)
  (seed_note,) = [line for line in text if "single seed" in line]
  assert "for lite0;" in seed_note  # Only lite0 has one seed; cnn has two.
