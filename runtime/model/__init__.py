"""The model layer: metadata, session, preprocessing, inference, labels (array -> tensor -> labels)."""
