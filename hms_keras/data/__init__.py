"""Reading, validating, preprocessing and batching the HMS data (Kaggle layout or synthetic)."""
