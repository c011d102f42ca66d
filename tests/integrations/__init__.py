"""Tests of the framework integrations (Keras, Lightning, Hugging Face) and their extras."""
