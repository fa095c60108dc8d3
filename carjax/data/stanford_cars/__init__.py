"""Stanford Cars downloads made into make-labelled image folders such as cars20.

* `makes`: Stanford class names -> makes, and the makes' folder names;
* `layouts`: finding and reading a download (Kaggle, Hugging Face or devkit layout);
* `dedup`: exact and near-duplicate photos;
* `recipe`: the cars20 recipe (`recipe.prepare`): select makes, crop, split, write.

`carjax.data.cars20` rebuilds cars20 itself from its shipped id list with the same readers
and image processing.
"""
